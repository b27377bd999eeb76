"""KL controllers for the per-token penalty β·KL(π ‖ π_ref) (Ziegler et al. 2019, §2.2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FixedKLController:
    """β stays what it was set to."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


@dataclass
class AdaptiveKLController:
    """β is steered toward a target KL: e = clip(KL/target − 1, −0.2, 0.2); β ← β·(1 + e·n/horizon).

    `n_steps` is the number of sequences in the batch that produced `current_kl`."""

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


def make_kl_controller(cfg) -> FixedKLController | AdaptiveKLController:
    """From the policy config section."""
    if cfg.kl_controller == "adaptive":
        return AdaptiveKLController(value=cfg.kl_coef, target=cfg.target_kl, horizon=cfg.kl_horizon)
    return FixedKLController(value=cfg.kl_coef)

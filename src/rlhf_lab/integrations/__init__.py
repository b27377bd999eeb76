"""rlhf-lab where training happens elsewhere: the audit's tension monitors inside a `transformers` Trainer (TRL's
GRPOTrainer, RLOOTrainer, DPOTrainer, …) and the world as TRL reward functions.

    from rlhf_lab.integrations import TensionMonitor, gold_reward, proxy_reward
    trainer = GRPOTrainer(model=..., reward_funcs=[proxy_reward("runs/x/reward", tok)], args=..., ...)
    TensionMonitor(every=100).attach(trainer)    # logs audit/<tension>/<metric>/… every 100 steps
    EarlyWarning(mode="stop").attach(trainer)    # warning/<detector>; stop: back to the checkpoint before it

Nothing here imports TRL; `transformers` is imported when a monitor is made (a Trainer needs it anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["EarlyWarning", "TensionMonitor", "gold_reward", "proxy_reward"]

if TYPE_CHECKING:
    from rlhf_lab.integrations.monitor import TensionMonitor
    from rlhf_lab.integrations.rewards import gold_reward, proxy_reward
    from rlhf_lab.integrations.warning import EarlyWarning


def __getattr__(name: str):
    # Lazy: importing the package costs nothing until a monitor or a reward function is asked for.
    if name == "TensionMonitor":
        from rlhf_lab.integrations.monitor import TensionMonitor

        return TensionMonitor
    if name == "EarlyWarning":
        from rlhf_lab.integrations.warning import EarlyWarning

        return EarlyWarning
    if name in ("gold_reward", "proxy_reward"):
        from rlhf_lab.integrations import rewards

        return getattr(rewards, name)
    raise AttributeError(name)

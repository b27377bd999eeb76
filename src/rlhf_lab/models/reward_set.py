"""Several reward models behind one `score`: conservative ensembles (Coste et al. 2023) and per-group
reward models with a MaxMin or weighted objective (Chakraborty et al. 2024).

Each member's score is normalised on SFT samples first, then the members are aggregated by one of the
pure rules in `AGGREGATORS`. Shapes: K members, B sequences.

Saved layout: `reward/` is member 0 (so a single-model reader still works), `reward/members/<k>/` the
others, and `reward/set.json` says how they combine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rlhf_lab.models.heads import ScalarHeadModel


def agg_mean(s: torch.Tensor, **_) -> torch.Tensor:
    """Mean over members. (K, B) → (B,)."""
    return s.mean(0)


def agg_min(s: torch.Tensor, **_) -> torch.Tensor:
    """Worst case over members (Coste et al. 2023 "WCO"; MaxMin over groups, Chakraborty et al. 2024)."""
    return s.min(0).values


def agg_uncertainty(s: torch.Tensor, *, uncertainty_coef: float = 0.5, **_) -> torch.Tensor:
    """Uncertainty-weighted: mean − λ·std over members (Coste et al. 2023 "UWO")."""
    return s.mean(0) - uncertainty_coef * s.std(0, unbiased=False)


def agg_weighted_mean(s: torch.Tensor, *, weights: torch.Tensor | None = None, **_) -> torch.Tensor:
    """Σ_k w_k s_k with w summing to 1 (e.g. group shares)."""
    if weights is None:
        return s.mean(0)
    w = weights.to(s) / weights.sum()
    return (w[:, None] * s).sum(0)


AGGREGATORS: dict[str, Callable[..., torch.Tensor]] = {
    "mean": agg_mean, "min": agg_min, "uncertainty": agg_uncertainty, "weighted_mean": agg_weighted_mean,
}


class RewardSet(nn.Module):
    """K reward models scored together; `score` returns the aggregate the policy optimises."""

    def __init__(self, members: list[ScalarHeadModel], *, aggregate: str, names: list[str] | None = None,
                 weights: list[float] | None = None, uncertainty_coef: float = 0.5):
        super().__init__()
        if aggregate not in AGGREGATORS:
            raise ValueError(f"unknown reward aggregation {aggregate!r}; expected one of {', '.join(AGGREGATORS)}")
        self.members = nn.ModuleList(members)
        self.aggregate = aggregate
        self.names = names or [str(i) for i in range(len(members))]
        self.uncertainty_coef = uncertainty_coef
        self.register_buffer("weights", torch.tensor(weights if weights else [1.0] * len(members)))

    def member_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised score of every member, (K, B)."""
        return torch.stack([m.score(input_ids, attention_mask) for m in self.members])

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, normalized: bool = True) -> torch.Tensor:
        """The aggregate, (B,). Members are always normalised (aggregating raw scales would be meaningless)."""
        return self.combine(self.member_scores(input_ids, attention_mask))

    def score_grouped(self, *args, normalized: bool = True) -> torch.Tensor:
        """The aggregate of every member's `ScalarHeadModel.score_grouped` (same arguments), (b,)."""
        return self.combine(torch.stack([m.score_grouped(*args) for m in self.members]))

    def combine(self, member_scores: torch.Tensor) -> torch.Tensor:
        """The aggregate of members' normalised scores, (K, B) → (B,)."""
        return AGGREGATORS[self.aggregate](member_scores, weights=self.weights, uncertainty_coef=self.uncertainty_coef)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.members[0].save(folder)
        for k, m in enumerate(self.members[1:], start=1):
            m.save(folder / "members" / str(k))
        (folder / "set.json").write_text(json.dumps({
            "aggregate": self.aggregate, "names": self.names, "weights": self.weights.tolist(),
            "uncertainty_coef": self.uncertainty_coef, "size": len(self.members)}))


def load_reward(folder: str | Path) -> ScalarHeadModel | RewardSet:
    """A saved reward model, or a saved set of them."""
    folder = Path(folder)
    meta_path = folder / "set.json"
    if not meta_path.exists():
        return ScalarHeadModel.load(folder)
    meta = json.loads(meta_path.read_text())
    members = [ScalarHeadModel.load(folder)] + [ScalarHeadModel.load(folder / "members" / str(k))
                                                 for k in range(1, meta["size"])]
    return RewardSet(members, aggregate=meta["aggregate"], names=meta["names"], weights=meta["weights"],
                     uncertainty_coef=meta["uncertainty_coef"])

"""The reward-model protocol, and several reward models behind one `score`: conservative ensembles (Coste
et al. 2023) and per-group reward models with a MaxMin or weighted objective (Chakraborty et al. 2024).

Each member's score is normalised on SFT samples first, then the members are aggregated by one of the
pure rules in `AGGREGATORS`. Shapes: K members, B sequences.

`RewardModel` is what every user of a reward model (training, evaluation, best-of-n, the audit) relies on:
a single `ScalarHeadModel` (scalar or distributional) is a set of one member, so nobody asks which kind it
holds. `score_tokens` scores token lists with any of them.

Saved layout: `reward/` is member 0 (so a single-model reader still works), `reward/members/<k>/` the
others, and `reward/set.json` says how they combine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from rlhf_lab.models.generation import left_pad
from rlhf_lab.models.heads import ScalarHeadModel


@runtime_checkable
class RewardModel(Protocol):
    """What scores a (prompt, response) sequence. Sequences are left padded: input_ids, attention_mask (B, T)."""

    names: list[str]  # one per member (a single model: ["rm"])
    members: list[ScalarHeadModel]  # the member models, in the order of `names` (a single model: itself)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
              normalized: bool = True) -> torch.Tensor:
        """The score the policy optimises, (B,)."""

    def score_grouped(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_of: torch.Tensor,
                      responses: torch.Tensor, response_mask: torch.Tensor, *, normalized: bool = True) -> torch.Tensor:
        """`score` with each distinct prompt's forward shared by its completions, (b,)."""

    def member_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Every member's normalised score, (K, B)."""

    def combine(self, member_scores: torch.Tensor) -> torch.Tensor:
        """The optimised score from the members' normalised scores, (K, B) → (B,)."""


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


def load_reward(folder: str | Path) -> RewardModel:
    """A saved reward model, or a saved set of them (`set.json` says which)."""
    folder = Path(folder)
    meta_path = folder / "set.json"
    if not meta_path.exists():
        return ScalarHeadModel.load(folder)
    meta = json.loads(meta_path.read_text())
    members = [ScalarHeadModel.load(folder)] + [ScalarHeadModel.load(folder / "members" / str(k))
                                                 for k in range(1, meta["size"])]
    return RewardSet(members, aggregate=meta["aggregate"], names=meta["names"], weights=meta["weights"],
                     uncertainty_coef=meta["uncertainty_coef"])


@torch.no_grad()
def score_tokens(rm: RewardModel, prompt_ids: list[list[int]], response_ids: list[list[int]], *, pad_id: int,
                 batch_size: int = 256, normalized: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Scores of (prompt, response) token lists: (the optimised score (N,), each member's normalised score (K, N)).
    Sequences of similar length are batched together (less padding); results come back in order.
    `normalized=False` gives the raw score (K = 1 models only: a set's members are always normalised)."""
    device = next(rm.parameters()).device
    rm.eval()
    seqs = [p + r for p, r in zip(prompt_ids, response_ids, strict=True)]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    agg = np.empty(len(seqs))
    members = np.empty((len(rm.names), len(seqs)))
    for i in range(0, len(order), batch_size):
        idx = order[i: i + batch_size]
        batch = left_pad([seqs[j] for j in idx], pad_id, device)  # (B, T)
        if normalized:
            m = rm.member_scores(batch.input_ids, batch.attention_mask).float()  # (K, B)
            s = rm.combine(m)  # (B,): from the members' scores, not a second forward
        else:
            s = rm.score(batch.input_ids, batch.attention_mask, normalized=False).float()  # (B,)
            m = s[None]
        members[:, idx] = m.cpu().numpy()
        agg[idx] = s.float().cpu().numpy()
    return agg, members

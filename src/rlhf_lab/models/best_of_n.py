"""The best-of-n policy as a model: n samples of the SFT policy, answered with the one the reward model scores
highest (Stiennon et al. 2020; Gao et al. 2022) — and its KL to the SFT policy, bounded and estimated.

KL(π_bon ‖ π_ref) ≤ log n − (n − 1)/n (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment
policy"). The bound is reached only when no two samples share a reward (a continuum of distinct answers); a
small model's answers repeat, and then the true KL is lower. `kl_plugin` computes the KL of best-of-n over the
empirical distribution of M reference samples of a prompt, the estimate that puts best-of-n and RL points on
one axis.

The KL functions need numpy only (the report reads them without paying for torch); `BestOfN` imports the
generation and scoring code when it samples.

Shapes: N prompts, n samples per prompt (best-of-n), M reference samples per prompt (the KL estimate).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from rlhf_lab.models.reward_set import RewardModel

MARKER = "best_of_n.json"  # in a policy folder: {"n": …}; the weights beside it are the SFT policy's


def kl_bound(n: int | np.ndarray) -> float | np.ndarray:
    """log n − (n − 1)/n: the upper bound on KL(π_bon ‖ π_ref) (Beirami et al. 2024, Thm 1), exact only when
    samples never tie."""
    n = np.asarray(n, dtype=float)
    out = np.log(n) - (n - 1) / n
    return float(out) if out.ndim == 0 else out


def kl_plugin(rewards: Sequence[float], keys: Sequence[Hashable], n: int) -> float:
    """KL(π_bon ‖ π̂) in nats, π̂ the empirical distribution of M reference samples of one prompt.

    Samples with the same key (the same token sequence) are one outcome with probability count/M; outcomes are
    ranked by reward, and outcomes of equal reward form one block (ties broken uniformly). With F the
    cumulative probability of the blocks up to and including B, best-of-n answers from B with probability
    π_bon(B) = F_B^n − F_{B−1}^n, so KL = Σ_B π_bon(B) log(π_bon(B) / π̂(B)). With M distinct samples it
    approaches the bound from below as M grows; repeats make it smaller."""
    if len(rewards) != len(keys):
        raise ValueError(f"kl_plugin: {len(rewards)} rewards but {len(keys)} keys")
    if not len(keys) or n <= 1:
        return 0.0
    count: dict[Hashable, int] = {}
    total: dict[Hashable, float] = {}
    for r, k in zip(rewards, keys, strict=True):
        count[k] = count.get(k, 0) + 1
        total[k] = total.get(k, 0.0) + float(r)
    # one sequence scored in batches of different padding may differ in the last bits: its mean is its reward
    block: dict[float, float] = {}
    for k, c in count.items():
        r = total[k] / c
        block[r] = block.get(r, 0.0) + c / len(keys)
    q = np.array([block[r] for r in sorted(block)])  # (blocks,) ascending in reward
    F = np.cumsum(q)
    F[-1] = 1.0
    p = F**n - np.concatenate([[0.0], F[:-1]]) ** n  # π_bon per block
    keep = p > 0
    return float(np.sum(p[keep] * np.log(p[keep] / q[keep])))


class BestOfN:
    """The best-of-n policy: `n` samples of `sampler` (π_SFT) per prompt; the answer is the one `reward` (the
    score the run optimised: a set's aggregate) rates highest, the first among equals. Not a network of its own:
    it has the sampler's parameters and moves both models with `to`."""

    def __init__(self, sampler: torch.nn.Module, reward: RewardModel, n: int):
        if n < 1:
            raise ValueError(f"best-of-n: n must be at least 1, got {n}")
        self.sampler, self.reward, self.n = sampler, reward, n

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.sampler.parameters()

    def to(self, device) -> BestOfN:
        self.sampler.to(device)
        self.reward.to(device)
        return self

    def eval(self) -> BestOfN:
        self.sampler.eval()
        self.reward.eval()
        return self

    def draw(self, prompt_ids: list[list[int]], *, pad_token_id: int, batch_size: int = 256,
             **sampling) -> tuple[list[list[int]], np.ndarray]:
        """n samples per prompt and their scores: (responses, N·n, prompt-major; scores (N, n)). `sampling`:
        the keyword arguments of `generation.generate` (max_new_tokens, temperature, eos_token_id, generator, …)."""
        from rlhf_lab.models.generation import generate
        from rlhf_lab.models.reward_set import score_tokens

        repeated = [ids for ids in prompt_ids for _ in range(self.n)]
        responses = generate(self.sampler, repeated, pad_token_id=pad_token_id, batch_size=batch_size, **sampling)
        scores, _ = score_tokens(self.reward, repeated, responses, pad_id=pad_token_id, batch_size=batch_size)
        return responses, scores.reshape(len(prompt_ids), self.n)

    def generate(self, prompt_ids: list[list[int]], *, pad_token_id: int, batch_size: int = 256,
                 **sampling) -> list[list[int]]:
        """One answer per prompt: the best of n samples."""
        if not prompt_ids:
            return []
        responses, scores = self.draw(prompt_ids, pad_token_id=pad_token_id, batch_size=batch_size, **sampling)
        best = scores.argmax(1)  # (N,)
        return [responses[i * self.n + int(j)] for i, j in enumerate(best)]


"""`policy.reward: gold` — the rollouts scored by the world's gold utility instead of the reward model.

A control only a simulated world allows. Gao et al. 2022 measure over-optimisation against a gold reward model
and also optimise that gold model directly; here gold is the world's own utility of each completion for the user
who asked (`World.gold`, the number every evaluation reports). With the proxy's error removed, whatever still
turns gold down as KL grows is the optimiser's (a step size that degrades the policy, a β too small), not
Goodhart's law. The reward model is still trained and still read: evaluation points report its proxy beside gold.

Gold is scaled as the reward model's scores are (reward.py `fit_normalisation`): mean 0 and std 1 on the SFT
policy's completions of the same "norm" prompts, so β weighs it as it weighs a reward model's score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rlhf_lab.models.tokenizer import decode_response
from rlhf_lab.steps.common import Context
from rlhf_lab.world import Prompt, World


class GoldReward:
    """gain · gold(prompt, text) + bias of each completion, for the prompt's own user."""

    def __init__(self, world: World, tokenizer, *, gain: float = 1.0, bias: float = 0.0):
        self.world, self.tokenizer, self.gain, self.bias = world, tokenizer, gain, bias

    def raw(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[int]]) -> np.ndarray:
        """(B,) gold utility of each response (token ids, cut at the first EOS, pad skipped) to its prompt."""
        return np.array([self.world.gold(p, decode_response(self.tokenizer, r))
                         for p, r in zip(prompts, responses, strict=True)], dtype=np.float64)

    def score(self, prompts: Sequence[Prompt], responses: torch.Tensor) -> torch.Tensor:
        """(B,) normalised gold of responses (B, R), as float32 on the responses' device."""
        raw = self.raw(prompts, responses.tolist())
        return torch.as_tensor(self.gain * raw + self.bias, dtype=torch.float32, device=responses.device)

    @classmethod
    def fit(cls, ctx: Context) -> GoldReward:
        """Normalised on the SFT samples the reward model's scores are normalised on (reward.py `norm_samples`)."""
        from rlhf_lab.steps.reward import norm_prompts, norm_samples

        prompts = norm_prompts(ctx)
        raw = cls(ctx.world, ctx.tokenizer).raw(prompts, norm_samples(ctx, prompt_ids=ctx.prompt_ids(prompts))[1])
        std = float(raw.std() + 1e-6)
        return cls(ctx.world, ctx.tokenizer, gain=1.0 / std, bias=-float(raw.mean()) / std)

"""`policy.optimise: gold` — the rollouts scored by the world's gold utility instead of the reward model.

A control only a simulated world allows: gold is the world's own utility of each completion for the user who
asked (`World.gold`, the number every evaluation reports). With no proxy error left to exploit, whatever still
turns gold down as KL grows is the optimiser's (a step size that degrades the policy, a β too small), not
Goodhart's law. The reward model is still trained and still read: evaluation points report its proxy beside
gold. The early-warning detectors that read the training scores (`objective/scores`, then gold) are left out.

Gold is scaled as the reward model's scores are (reward.py `unit_scale`): mean 0 and std 1 on the SFT policy's
completions of the "norm" prompts, so β weighs it as it weighs a reward model's score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rlhf_lab.config import ConfigError
from rlhf_lab.models.tokenizer import decode_response
from rlhf_lab.steps.common import Context
from rlhf_lab.ui import info
from rlhf_lab.world import Prompt, World

MIN_STD = 1e-3  # below this the SFT policy's gold does not vary: a scale 1/std would blow every score up


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
        """Scaled on SFT samples of the norm prompts, drawn by the main process and shared with every other (the
        samples' seed differs per process, and every process must score on one scale)."""
        from rlhf_lab.steps.reward import norm_prompts, norm_samples, unit_scale  # reward imports the policy loop

        gain_bias = [None]
        if ctx.is_main:
            prompts = norm_prompts(ctx)
            raw = cls(ctx.world, ctx.tokenizer).raw(prompts, norm_samples(ctx, prompt_ids=ctx.prompt_ids(prompts))[1])
            if raw.std() < MIN_STD:
                raise ConfigError(f"policy.optimise: gold — the SFT policy's gold utility does not vary on its "
                                  f"{len(raw)} norm samples (all {raw.mean():+.2f}), so there is no scale to give "
                                  "it; train the SFT policy first (sft.enabled) or raise reward.n_norm_samples")
            gain_bias = [unit_scale(raw)]
        if ctx.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            gain_bias = broadcast_object_list(gain_bias, from_process=0)
        gain, bias = gain_bias[0]
        info(f"Optimising gold utility (policy.optimise: gold), scaled {gain:.3f} · gold {bias:+.3f}")
        return cls(ctx.world, ctx.tokenizer, gain=gain, bias=bias)

"""Step 4, alternative — RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, "Back to
basics"). A whole completion is one action: its reward is the score minus β times its KL to π_ref, and the
mean reward of its k − 1 siblings is the baseline. No value function.

Shapes: b completions, r response tokens.
"""

from __future__ import annotations

import torch

from rlhf_lab.steps.common import Context
from rlhf_lab.steps.losses import masked_mean, ppo_policy_loss, rloo_advantages
from rlhf_lab.steps.policy.critic_free import CriticFree
from rlhf_lab.steps.policy.online import run_online


def rloo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, *, cliprange: float,
              beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """−A·ρ with ρ = π(y)/π_old(y) of the whole completion, clipped to 1 ± ε when a batch is optimised more
    than once; at ρ = 1 its gradient is REINFORCE's −A·∇log π(y). β is already in the reward, so unused here.

    Statistics: approxkl per token (as PPO's and GRPO's); the clip fraction and ratio are per completion, the
    unit RLOO clips in, and named so (seq_clipfrac, seq_ratio)."""
    seq_logprobs = (logprobs * mask).sum(1, keepdim=True)  # (b, 1): log π(y) of each completion
    old_seq_logprobs = (old_logprobs * mask).sum(1, keepdim=True)  # (b, 1)
    loss, seq_stats = ppo_policy_loss(seq_logprobs, old_seq_logprobs, advantages[:, None],
                                      torch.ones_like(seq_logprobs), cliprange=cliprange)
    with torch.no_grad():
        stats = {"approxkl": 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask),
                 "seq_clipfrac": seq_stats["clipfrac"], "seq_ratio": seq_stats["ratio"]}
    return loss, stats


RLOO = CriticFree(name="rloo", kl_in_reward=True, advantages=rloo_advantages, loss=rloo_loss)


def run_rloo(ctx: Context) -> dict:
    return run_online(ctx, RLOO)

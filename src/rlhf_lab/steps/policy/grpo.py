"""Step 4, alternative — GRPO: group relative policy optimisation (Shao et al. 2024, DeepSeekMath §4.1).
Each completion's advantage is its reward standardised within its group of G completions of the same prompt
(outcome supervision: the same advantage on every token); the loss is PPO's clipped surrogate per token plus
β times the k3 estimate of KL(π ‖ π_ref), averaged per completion. No value function.
"""

from __future__ import annotations

from rlhf_lab.steps.common import Context
from rlhf_lab.steps.losses import grpo_advantages, grpo_policy_loss
from rlhf_lab.steps.policy.critic_free import CriticFree
from rlhf_lab.steps.policy.online import run_online

GRPO = CriticFree(name="grpo", kl_in_reward=False, advantages=grpo_advantages, loss=grpo_policy_loss)


def run_grpo(ctx: Context) -> dict:
    return run_online(ctx, GRPO)

"""Step 4 — policy optimisation. One entry per algorithm; `policy.algorithm` picks it (docs/algorithms.md)."""

from __future__ import annotations

from collections.abc import Callable

from rlhf_lab.steps.common import Context
from rlhf_lab.steps.policy.best_of_n import run_best_of_n
from rlhf_lab.steps.policy.dpo import run_dpo
from rlhf_lab.steps.policy.grpo import run_grpo
from rlhf_lab.steps.policy.ppo import run_ppo
from rlhf_lab.steps.policy.rloo import run_rloo

ALGORITHMS: dict[str, Callable[[Context], dict]] = {
    "ppo": run_ppo,
    "dpo": run_dpo,
    "rloo": run_rloo,
    "grpo": run_grpo,
    "best_of_n": run_best_of_n,
}


def run_policy(ctx: Context) -> dict:
    return ALGORITHMS[ctx.cfg.policy.algorithm](ctx)

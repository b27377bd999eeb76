"""Step 4 — policy optimisation. One entry per algorithm; `policy.algorithm` picks it."""

from __future__ import annotations

from collections.abc import Callable

from rlhf_lab.steps.common import Context
from rlhf_lab.steps.policy.ppo import run_ppo

ALGORITHMS: dict[str, Callable[[Context], dict]] = {"ppo": run_ppo}


def run_policy(ctx: Context) -> dict:
    return ALGORITHMS[ctx.cfg.policy.algorithm](ctx)

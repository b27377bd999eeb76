"""The world as TRL reward functions, `(prompts, completions, **columns) -> list[float]` (TRL 1.16's reward_funcs):

    ds = world_dataset(256)                                  # "prompt" (chat turns) + "world_prompt" per row
    rewards = [proxy_reward("runs/x/reward", tok), gold_reward()]
    GRPOConfig(..., reward_weights=[1.0, 0.0])               # train on the proxy; gold is only watched

`gold_reward` is the world's true utility for the asking user, read from the completion by the world's English
parser — evaluation only: weight it 0 and TRL logs `rewards/gold_reward/mean` beside the proxy, so the gap
between what is optimised and what is wanted shows while it opens. `proxy_reward` is a reward model trained
by rlhf-lab (a run's reward/ folder), scoring the same token ids the audit scores.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_lab.config import WorldConfig
from rlhf_lab.world import Prompt, World

WORLD_COLUMN = "world_prompt"  # the Prompt as JSON: what the world knows about the request (truth, the user)


def _world(cfg: WorldConfig | None) -> World:
    return World(cfg or WorldConfig(), language="english")


def world_dataset(n: int, *, split: str = "train", seed: int = 0, world: WorldConfig | None = None) -> list[dict]:
    """`n` rows {"prompt": [{"role", "content"}, …], "world_prompt": JSON}: TRL's conversational prompt column,
    and the world's record of each prompt that the reward functions read. (`datasets.Dataset.from_list` it.)"""
    w = _world(world)
    return [{"prompt": [{"role": r, "content": c} for r, c in w.messages(p)], WORLD_COLUMN: json.dumps(p.to_dict())}
            for p in w.prompts(split, n, seed=seed)]


def _text(completion) -> str:
    """A completion as TRL passes it: a string, or chat turns (the assistant's)."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def _prompts(kwargs: dict, n: int) -> list[Prompt]:
    rows = kwargs.get(WORLD_COLUMN)
    if rows is None or len(rows) != n:
        raise ValueError(f"the world's reward functions need the dataset column {WORLD_COLUMN!r} "
                         "(build the dataset with rlhf_lab.integrations.rewards.world_dataset)")
    return [Prompt.from_dict(json.loads(r)) for r in rows]


def gold_reward(world: WorldConfig | None = None):
    """The world's gold utility of each completion for its own user (evaluation only: give it weight 0)."""
    w = _world(world)

    def gold_reward(prompts, completions, **kwargs) -> list[float]:
        return [w.gold(p, _text(c)) for p, c in zip(_prompts(kwargs, len(completions)), completions, strict=True)]

    return gold_reward


def proxy_reward(folder: str | Path, tokenizer, *, batch_size: int = 64):
    """A reward model trained by rlhf-lab (`folder`: a run's reward/, a single model or a set) as a TRL reward:
    the prompt rendered by `tokenizer`'s chat template, the completion encoded as the audit encodes it, the
    normalised score (a set's aggregate)."""
    import torch

    from rlhf_lab.audit.external import load_reward_for
    from rlhf_lab.integrations.monitor import probe_tokenizer
    from rlhf_lab.models.reward_set import score_tokens
    from rlhf_lab.models.tokenizer import encode_prompts, encode_response, render_prompt

    tok = probe_tokenizer(tokenizer)
    rm = load_reward_for(folder, tok).eval()

    def proxy_reward(prompts, completions, **kwargs) -> list[float]:
        texts = [p if isinstance(p, str) else render_prompt(tok, [(m["role"], m["content"]) for m in p])
                 for p in prompts]
        with torch.no_grad():
            scores, _ = score_tokens(rm, encode_prompts(tok, texts), [encode_response(tok, _text(c))
                                                                       for c in completions],
                                     pad_id=tok.pad_token_id, batch_size=batch_size)
        return [float(s) for s in scores]

    return proxy_reward

"""RLOO and GRPO's part of the online loop (online.py): k completions per prompt scored by the reward model, an
advantage per completion computed from its group (no value function), then clipped policy-gradient epochs. What
differs between the two — where the KL goes, the advantage, the loss — is a `CriticFree` (see rloo.py and
grpo.py).

Shapes: B = N·k completions (N prompts, k per prompt, siblings adjacent), P prompt tokens, R response tokens,
V vocab.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from rlhf_lab.steps.common import Context
from rlhf_lab.steps.losses import entropy_from_logits, kl_per_token, masked_mean, token_logprobs
from rlhf_lab.steps.policy.loop import global_masked_moments, minibatch_slices, sequence_lengths
from rlhf_lab.steps.policy.online import Rollout
from rlhf_lab.steps.policy.prefix import GroupedLM, distinct_prompts, grouped_response_logits


@dataclass(frozen=True)
class CriticFree:
    """One critic-free algorithm: its name (also its metric namespace) and its three choices."""

    name: str
    # True: the reward is r − β·KL(sequence) (RLOO); False: β·KL is a term of the loss (GRPO)
    kl_in_reward: bool
    # rewards (N, k) → advantages (N, k)
    advantages: Callable[[torch.Tensor], torch.Tensor]
    # (logprobs, old_logprobs, ref_logprobs (b, r), advantages (b,), mask (b, r), *, cliprange, beta)
    #   → (loss, stats); a mean over completions, so microbatches are weighted by their number of completions.
    #   stats: approxkl (per token), and the loss's own (clipfrac, ratio: per token or per completion)
    loss: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

    def trained(self, ctx: Context, policy: torch.nn.Module) -> torch.nn.Module:
        return policy

    def forward_module(self, model: torch.nn.Module) -> GroupedLM:
        return GroupedLM(model)  # each prompt's forward shared by its k completions

    def update(self, ctx: Context, model, wrapped, optimizer, ro: Rollout, *, beta: float,
               rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        cfg, k = ctx.cfg.policy, ctx.cfg.policy.k
        kl_reward = self.kl_in_reward and beta > 0
        # Optimised once (one epoch, one minibatch): π_old = π, so the training forward gives log π_old for free;
        # a reward that needs it (RLOO's KL) then needs the batch in one microbatch.
        once = cfg.epochs * cfg.minibatches == 1
        one_forward = once and cfg.microbatch_size >= ro.responses.shape[0]
        # 3a. log π_old, unless the training forward can provide it
        if not once or (kl_reward and not one_forward):
            ro.logprobs = old_logprobs(ctx, model, ro, k=k)
        # 3b. rewards (RLOO: r − β·KL of the whole completion) and advantages within each group of k
        advantages_of = partial(group_advantages, self, ro, k=k, beta=beta if kl_reward else 0.0,
                                estimator=cfg.kl_estimator)
        advantages = advantages_of if kl_reward and ro.logprobs is None else advantages_of(ro.logprobs)
        # 3c. clipped policy-gradient epochs
        s, logprobs, advantages = policy_update(ctx, self, wrapped, optimizer, ro, advantages, beta=beta, rng=rng)
        _, adv_var = global_masked_moments(ctx.accelerator, advantages, torch.ones_like(advantages))
        stats = {METRICS[key]: torch.tensor([v]) for key, v in s.items()}
        stats["advantages/std"] = adv_var.sqrt().reshape(1)  # over every process's completions
        stats["frac_reward_zero_std"] = (ro.scores.view(-1, k).std(1) < 1e-6).float()  # (N,) per group
        return stats, logprobs


# the loss statistics' names in the log (under the algorithm's namespace)
# (approxkl, clipfrac, ratio: per token; seq_…: per completion; kl_per_token: GRPO's k3 term)
METRICS = {"loss": "loss/policy_avg", "approxkl": "policy/approxkl_avg", "clipfrac": "policy/clipfrac_avg",
           "seq_clipfrac": "policy/seq_clipfrac_avg", "ratio": "val/ratio", "seq_ratio": "val/seq_ratio",
           "entropy": "policy/entropy_avg", "kl": "kl_per_token"}


@torch.no_grad()
def old_logprobs(ctx: Context, policy, ro: Rollout, *, k: int) -> torch.Tensor:
    """log π_old(y_t) of every sampled token (B, R), each prompt's forward shared by its k completions."""
    rows, prompt_of, cols = distinct_prompts(torch.arange(ro.responses.shape[0], device=ro.responses.device), k,
                                             ro.query.attention_mask)
    was_training = policy.training
    policy.eval()
    with ctx.accelerator.autocast():
        logits = grouped_response_logits(policy, ro.query.input_ids[rows, cols], ro.query.attention_mask[rows, cols],
                                         prompt_of, ro.responses, ro.mask)  # (B, R, V)
        logprobs = token_logprobs(logits, ro.responses, temperature=ctx.cfg.generation.temperature,
                                  pad_token_id=ctx.tokenizer.pad_token_id)
    policy.train(was_training)
    return logprobs


def group_advantages(algo: CriticFree, ro: Rollout, old_logprobs: torch.Tensor | None, *, k: int, beta: float,
                     estimator: str) -> torch.Tensor:
    """The algorithm's advantages within each group of k from the rewards: the scores, minus β·KL(π_old ‖ π_ref)
    of each whole completion when β > 0 (RLOO). → (B,)."""
    rewards = ro.scores  # (B,)
    if beta:
        rewards = rewards - beta * (kl_per_token(old_logprobs, ro.ref_logprobs, estimator) * ro.mask).sum(1)
    return algo.advantages(rewards.view(-1, k)).reshape(-1)  # (N, k) → (B,)


def policy_update(ctx: Context, algo: CriticFree, model: GroupedLM, optimizer, ro: Rollout,
                  advantages: torch.Tensor | Callable[[torch.Tensor], torch.Tensor], *, beta: float,
                  rng: np.random.Generator) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Epochs over one batch: minibatches of whole groups (one optimiser step each) → microbatches, reshuffled
    every epoch. `model`: the policy in a GroupedLM (each prompt's forward shared by its completions).

    When the batch is optimised once and `ro.logprobs` is None, the training forward itself gives log π_old
    (π_old = π before the only step). `advantages` may then be a function of log π_old (B, R) → (B,), for a
    reward that needs it (RLOO's KL), evaluated after the forward; that needs the batch in one microbatch.
    Returns the mean statistics, log π_old (B, R) and the advantages (B,)."""
    cfg, acc, pad = ctx.cfg.policy, ctx.accelerator, ctx.tokenizer.pad_token_id
    k, T = cfg.k, ctx.cfg.generation.temperature
    query = ro.query
    old_logprobs = ro.logprobs if ro.logprobs is not None else torch.zeros_like(ro.ref_logprobs)
    stats: dict[str, list[float]] = {k: [] for k in METRICS}
    lengths = sequence_lengths(query.attention_mask, ro.mask).cpu().numpy()  # (B,)
    model.train()
    for _epoch in range(cfg.epochs):
        for micros in minibatch_slices(ro.responses.shape[0], cfg, rng, group=k, lengths=lengths):
            n_mb = sum(len(mc) for mc in micros)
            for micro in micros:
                idx = torch.as_tensor(micro, device=ro.responses.device)
                rows, prompt_of, cols = distinct_prompts(idx, k, query.attention_mask)
                r_len = max(1, int(ro.mask[idx].sum(1).max()))  # longest response here
                m = ro.mask[idx, :r_len]
                logits = model(query.input_ids[rows, cols], query.attention_mask[rows, cols], prompt_of,
                               ro.responses[idx, :r_len], m)  # (b, r, V)
                logprobs = token_logprobs(logits, ro.responses[idx, :r_len], temperature=T,
                                          pad_token_id=pad)  # (b, r)
                if ro.logprobs is None:
                    old_logprobs[idx, :r_len] = logprobs.detach()
                if callable(advantages):  # the reward depends on log π_old, which this (only) forward provides
                    if len(idx) != ro.responses.shape[0]:
                        raise ValueError("advantages that depend on log π_old need the whole batch in one microbatch")
                    advantages = advantages(old_logprobs)
                loss, s = algo.loss(logprobs, old_logprobs[idx, :r_len], ro.ref_logprobs[idx, :r_len],
                                    advantages[idx], m, cliprange=cfg.cliprange, beta=beta)
                acc.backward(loss * len(idx) / n_mb)  # the loss is a mean over completions
                with torch.no_grad():
                    ent = entropy_from_logits(logits.detach() / T, pad_token_id=pad)  # (b, r)
                    s["entropy"] = masked_mean(ent, m)
                    s["loss"] = loss.detach()
                for key in stats:
                    if key in s:
                        stats[key].append(float(s[key]))
            acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {key: float(np.mean(v)) for key, v in stats.items() if v}, old_logprobs, advantages

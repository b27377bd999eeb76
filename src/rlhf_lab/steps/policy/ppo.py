"""Step 4 — PPO with a per-token KL penalty to the frozen SFT reference (Ziegler et al. 2019; Stiennon et
al. 2020; Ouyang et al. 2022), with the implementation details of Huang et al. 2022/2024 ("The N+
implementation details of RLHF with PPO"). The rollout, evaluation, checkpoints and logging are the online
loop's (online.py); this module is PPO's update, its steps numbered.

Shapes: B rollout batch, P prompt tokens (left padded), R response tokens (right padded after EOS),
T = P + R, V vocab.
"""

from __future__ import annotations

import numpy as np
import torch

from rlhf_lab.models.heads import PolicyAndValue, ScalarHeadModel
from rlhf_lab.steps.common import Context, join_query_response
from rlhf_lab.steps.losses import (
    entropy_from_logits,
    gae,
    kl_per_token,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    token_logprobs,
)
from rlhf_lab.steps.policy.loop import (
    by_length,
    global_masked_moments,
    global_sum,
    minibatch_slices,
    sequence_lengths,
    trimmed,
)
from rlhf_lab.steps.policy.online import Rollout, run_online
from rlhf_lab.steps.policy.online import rollout as sample_rollout


@torch.no_grad()
def old_logprobs_and_values(ctx: Context, pv: PolicyAndValue, ro: Rollout) -> Rollout:
    """log π_old and V_old of every response token, from one forward where the value head is shared, from
    logits / T (the distribution that was sampled), in the run's precision. → the rollout with both set."""
    pad, T = ctx.tokenizer.pad_token_id, ctx.cfg.generation.temperature
    ids, mask, pos, _ = join_query_response(ro.query, ro.responses, pad)
    ro.logprobs = torch.zeros(ro.responses.shape, device=ids.device)  # (B, R)
    ro.values = torch.zeros(ro.responses.shape, device=ids.device)  # (B, R): V of the state before each token
    with ctx.accelerator.autocast():  # in chunks of similar length: padding is not computed
        for idx, sl, _p_len, r_len in by_length(ro.query.attention_mask, ro.mask, ctx.cfg.policy.microbatch_size):
            logits, values = pv(ids[idx, sl], mask[idx, sl], pos[idx, sl], keep=r_len + 1)  # positions P−1 … T−1
            ro.logprobs[idx, :r_len] = token_logprobs(logits[:, :-1], ro.responses[idx, :r_len], temperature=T,
                                                      pad_token_id=pad)
            ro.values[idx, :r_len] = values[:, :-1].float() * ro.mask[idx, :r_len]
    return ro


def rollout(ctx: Context, pv: PolicyAndValue, ref, rm: ScalarHeadModel, prompt_ids: list[list[int]], *,
            generator: torch.Generator) -> Rollout:
    """Everything PPO knows about a batch before its update: sampled, scored, log π_ref, log π_old and V_old."""
    return old_logprobs_and_values(ctx, pv, sample_rollout(ctx, pv.lm, ref, rm, prompt_ids, generator=generator))


def compute_rewards(ro: Rollout, *, kl_coef: float, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: −β·KL_t on every token, plus the score on the last real token. → (B, R) each."""
    kl = kl_per_token(ro.logprobs, ro.ref_logprobs, estimator) * ro.mask  # (B, R)
    non_score_reward = -kl_coef * kl
    rewards = non_score_reward.clone()
    last = (ro.mask.sum(1).long() - 1).clamp(min=0)  # (B,) index of EOS (or of the last token if truncated)
    rewards[torch.arange(rewards.shape[0]), last] += ro.scores
    return rewards, non_score_reward


def ppo_update(ctx: Context, pv, optimizer, ro: Rollout, advantages: torch.Tensor,
               returns: torch.Tensor, *, rng: np.random.Generator) -> dict[str, float]:
    """PPO epochs over one rollout: batch → minibatches → microbatches, reshuffled every epoch."""
    cfg, acc, pad = ctx.cfg.policy, ctx.accelerator, ctx.tokenizer.pad_token_id
    T = ctx.cfg.generation.temperature
    ids, mask, pos, _ = join_query_response(ro.query, ro.responses, pad)
    stats: dict[str, list[float]] = {k: [] for k in ("approxkl", "clipfrac", "pg_loss", "vf_loss", "vf_clipfrac",
                                                      "entropy", "ratio", "vf_error")}
    lengths = sequence_lengths(ro.query.attention_mask, ro.mask).cpu().numpy()  # (B,)
    pv.train()
    for _epoch in range(cfg.epochs):
        for micros in minibatch_slices(ro.responses.shape[0], cfg, rng, lengths=lengths):
            # Both losses are means over the minibatch's tokens on every process: each microbatch adds its share
            # of them, so any split into microbatches or processes gives the same gradient (DDP averages over
            # processes, hence the factor num_processes).
            mb_tokens = global_sum(acc, ro.mask[torch.as_tensor(np.concatenate(micros), device=ids.device)].sum())
            scale = acc.num_processes / mb_tokens.clamp(min=1)
            for micro in micros:
                idx = torch.as_tensor(micro, device=ids.device)
                sl, _p_len, r_len = trimmed(ro.query.attention_mask, ro.mask, idx)
                m = ro.mask[idx, :r_len]
                logits, vpred = pv(ids[idx, sl], mask[idx, sl], pos[idx, sl], keep=r_len + 1)  # (b, r+1, …)
                logits, vpred = logits[:, :-1], vpred[:, :-1]  # (b, r, V), (b, r)
                new_logprobs = token_logprobs(logits, ro.responses[idx, :r_len], temperature=T,
                                              pad_token_id=pad)
                pg_loss, pg_stats = ppo_policy_loss(new_logprobs, ro.logprobs[idx, :r_len],
                                                    advantages[idx, :r_len], m, cliprange=cfg.cliprange)
                vf_loss, vf_stats = ppo_value_loss(vpred, ro.values[idx, :r_len], returns[idx, :r_len], m,
                                                   cliprange_value=cfg.cliprange_value)
                loss = pg_loss + cfg.vf_coef * vf_loss
                acc.backward(loss * m.sum() * scale)
                with torch.no_grad():
                    ent = masked_mean(entropy_from_logits(logits.detach() / T, pad_token_id=pad), m)
                    pg_loss, vf_loss = pg_loss.detach(), vf_loss.detach()
                for k, v in (("approxkl", pg_stats["approxkl"]), ("clipfrac", pg_stats["clipfrac"]),
                             ("pg_loss", pg_loss), ("vf_loss", vf_loss), ("vf_clipfrac", vf_stats["clipfrac"]),
                             ("entropy", ent), ("ratio", pg_stats["ratio"]), ("vf_error", vf_stats["error"])):
                    stats[k].append(v.item() if torch.is_tensor(v) else float(v))
            acc.clip_grad_norm_(pv.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {k: float(np.mean(v)) for k, v in stats.items()}


class PPO:
    """PPO's part of the online loop: the policy with a value function, and its update."""

    name = "ppo"

    def trained(self, ctx: Context, policy: torch.nn.Module) -> PolicyAndValue:
        # V: a head on the policy's trunk, or a model of its own initialised from the reward model
        value_model = ScalarHeadModel.load(ctx.run / "reward") if ctx.cfg.policy.value_model == "separate" else None
        return PolicyAndValue(policy, value_model=value_model)

    def forward_module(self, model: PolicyAndValue) -> PolicyAndValue:
        return model

    def update(self, ctx: Context, model: PolicyAndValue, wrapped, optimizer, ro: Rollout, *, beta: float,
               rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        cfg, acc = ctx.cfg.policy, ctx.accelerator
        # 3a. log π_old and the values V_old of the sampled tokens (one forward when V shares the trunk)
        ro = old_logprobs_and_values(ctx, model, ro)
        # 3b. per-token rewards: −β·KL on every token, the score on the last
        rewards, _non_score_reward = compute_rewards(ro, kl_coef=beta, estimator=cfg.kl_estimator)
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, ro.mask, shift_mean=False,
                                    moments=global_masked_moments(acc, rewards, ro.mask))
        # 3c. advantages with GAE, whitened over the batch of every process
        advantages, returns = gae(rewards, ro.values, ro.mask, gamma=cfg.gamma, lam=cfg.lam)
        advantages = masked_whiten(advantages, ro.mask, moments=global_masked_moments(acc, advantages, ro.mask))
        # 3d. PPO epochs: clipped surrogate and clipped value loss
        s = ppo_update(ctx, wrapped, optimizer, ro, advantages, returns, rng=rng)
        names = {"approxkl": "policy/approxkl_avg", "clipfrac": "policy/clipfrac_avg", "pg_loss": "loss/policy_avg",
                 "vf_loss": "loss/value_avg", "vf_clipfrac": "val/clipfrac_avg", "entropy": "policy/entropy_avg",
                 "ratio": "val/ratio", "vf_error": "val/error"}
        return {names[key]: torch.tensor([v]) for key, v in s.items()}, ro.logprobs


def run_ppo(ctx: Context) -> dict:
    return run_online(ctx, PPO())

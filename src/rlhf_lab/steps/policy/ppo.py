"""Step 4 — PPO with a per-token KL penalty to the frozen SFT reference (Ziegler et al. 2019; Stiennon et
al. 2020; Ouyang et al. 2022), with the implementation details of Huang et al. 2022/2024 ("The N+
implementation details of RLHF with PPO").

Shapes: B rollout batch, P prompt tokens (left padded), R response tokens (right padded after EOS),
T = P + R, V vocab.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_lab.models.generation import Batch, left_pad, sample_loop
from rlhf_lab.models.heads import PolicyAndValue, ScalarHeadModel
from rlhf_lab.steps.common import Context, join_query_response, seed_everything
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
from rlhf_lab.steps.policy.kl import make_kl_controller
from rlhf_lab.steps.policy.loop import (
    EvalPoints,
    annealed_lr,
    checkpoint,
    global_masked_moments,
    global_means,
    global_sum,
    log_sample_table,
    minibatch_slices,
    policy_reference_reward,
    process_seeds,
    report_final,
    resume,
    rl_prompts,
    save_policy,
    score_completions,
    set_lr,
    trimmed,
)
from rlhf_lab.ui import progress


@dataclass
class Rollout:
    """One batch of experience. query (B, P); responses, logprobs, ref_logprobs, values, mask (B, R)."""

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    responses: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor  # (B,) reward-model score, after the missing-EOS penalty
    mask: torch.Tensor
    contain_eos: torch.Tensor  # (B,)


@torch.no_grad()
def rollout(ctx: Context, pv: PolicyAndValue, ref, rm: ScalarHeadModel, prompt_ids: list[list[int]], *,
            generator: torch.Generator) -> Rollout:
    """Sample responses and compute everything PPO needs about them, without gradients, in the run's precision
    (bf16 autocast where configured)."""
    cfg, tok, device, T = ctx.cfg.policy, ctx.tokenizer, ctx.device, ctx.cfg.generation.temperature
    pad, eos = tok.pad_token_id, tok.eos_token_id
    query = left_pad(prompt_ids, pad, device)
    with ctx.accelerator.autocast():
        # 1. generate with the current policy (KV cache, left padding; pad never sampled)
        responses = sample_loop(pv.lm, query, max_new_tokens=ctx.cfg.generation.max_new_tokens, temperature=T,
                                eos_token_id=eos, pad_token_id=pad, generator=generator,
                                cuda_graph=ctx.cfg.model.cuda_graphs)  # (B, R)
        ids, mask, pos, rmask = join_query_response(query, responses, pad)
        R = responses.shape[1]
        # 2. logprobs under π (with the values V of the states before each token, same forward where shared)
        #    and under π_ref, both from logits / T: the distribution that was sampled
        logits, values = pv(ids, mask, pos, keep=R + 1)  # positions P−1 … T−1
        logprobs = token_logprobs(logits[:, :-1], responses, temperature=T,
                                  pad_token_id=pad)  # (B, R)
        values = values[:, :-1].float()  # (B, R)
        ref_logits = ref(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=R + 1).logits
        ref_logprobs = token_logprobs(ref_logits[:, :-1], responses, temperature=T,
                                      pad_token_id=pad)  # (B, R)
        # 3. score at the last real token; a response that never stopped gets a fixed penalty
        scores, contain_eos = score_completions(rm, ids, mask, responses, eos_token_id=eos,
                                                missing_eos_penalty=cfg.missing_eos_penalty)
    return Rollout(query.input_ids, query.attention_mask, responses, logprobs, ref_logprobs, values * rmask,
                   scores, rmask, contain_eos)


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
    ids, mask, pos, _ = join_query_response(Batch(ro.query_ids, ro.query_mask), ro.responses, pad)
    stats: dict[str, list[float]] = {k: [] for k in ("approxkl", "clipfrac", "pg_loss", "vf_loss", "vf_clipfrac",
                                                      "entropy", "ratio", "vf_error")}
    pv.train()
    for _epoch in range(cfg.epochs):
        for micros in minibatch_slices(ro.responses.shape[0], cfg, rng):
            # Both losses are means over the minibatch's tokens on every process: each microbatch adds its share
            # of them, so any split into microbatches or processes gives the same gradient (DDP averages over
            # processes, hence the factor num_processes).
            mb_tokens = global_sum(acc, ro.mask[torch.as_tensor(np.concatenate(micros), device=ids.device)].sum())
            scale = acc.num_processes / mb_tokens.clamp(min=1)
            for micro in micros:
                idx = torch.as_tensor(micro, device=ids.device)
                sl, _p_len, r_len = trimmed(ro.query_mask, ro.mask, idx)
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


def run_ppo(ctx: Context) -> dict:
    """The PPO loop, resumable from its last checkpoint in `run/policy_ckpt`."""
    cfg, acc, run = ctx.cfg.policy, ctx.accelerator, ctx.run
    seed_everything(ctx.cfg.seed + 4)
    policy, ref, rm = policy_reference_reward(ctx)  # π (LoRA adapters if configured), π_ref and r: frozen
    # V: a head on the policy's trunk, or a model of its own initialised from the reward model
    value_model = ScalarHeadModel.load(run / "reward") if cfg.value_model == "separate" else None
    pv = PolicyAndValue(policy, value_model=value_model)
    optimizer = torch.optim.AdamW([p for p in pv.parameters() if p.requires_grad], lr=cfg.lr, eps=1e-5)
    kl_ctl = make_kl_controller(cfg)
    seeds = process_seeds(ctx.cfg.seed, acc.process_index)
    gen = torch.Generator().manual_seed(seeds["sample"])
    np_rng = np.random.default_rng(seeds["shuffle"])
    start = resume(ctx, model=pv, optimizer=optimizer, kl_ctl=kl_ctl, generator=gen, np_rng=np_rng)
    pv_wrapped, optimizer = acc.prepare(pv, optimizer)
    evaluate = EvalPoints(ctx, pv.lm, ref=ref, rm=rm)

    if start == 0:
        evaluate(0)
    t0 = time.time()
    last_eval: dict = {}
    with progress("PPO", cfg.updates) as advance:
        advance(start)
        for update in range(start + 1, cfg.updates + 1):
            # 1.–3. rollout: sample, logprobs and values, scores
            prompts = rl_prompts(ctx, update, cfg.batch_size)
            ro = rollout(ctx, pv, ref, rm, ctx.prompt_ids(prompts), generator=gen)
            # 4. learning-rate annealing: linear to 0 over the updates
            set_lr(optimizer, annealed_lr(cfg, update, cfg.updates))
            # 5. per-token rewards: −β·KL on every token, the score on the last
            rewards, non_score_reward = compute_rewards(ro, kl_coef=kl_ctl.value, estimator=cfg.kl_estimator)
            if cfg.whiten_rewards:
                rewards = masked_whiten(rewards, ro.mask, shift_mean=False,
                                        moments=global_masked_moments(acc, rewards, ro.mask))
            # 6. advantages with GAE, whitened over the batch
            advantages, returns = gae(rewards, ro.values, ro.mask, gamma=cfg.gamma, lam=cfg.lam)
            advantages = masked_whiten(advantages, ro.mask, moments=global_masked_moments(acc, advantages, ro.mask))
            # 7. PPO epochs
            s = ppo_update(ctx, pv_wrapped, optimizer, ro, advantages, returns, rng=np_rng)
            # 8. logging and the KL controller, from statistics over every process's sequences (each process
            #    steers β by the same KL, so β stays one number)
            kl_seq = (kl_per_token(ro.logprobs, ro.ref_logprobs, cfg.kl_estimator) * ro.mask).sum(1)  # (B,)
            g = global_means(acc, {
                "seq_kl": kl_seq, "scores": ro.scores, "non_score_reward": non_score_reward.sum(1),
                "seq_entropy": (-ro.logprobs * ro.mask).sum(1), "eos_rate": ro.contain_eos.float(),
                "length": ro.mask.sum(1).float(), **{k: torch.tensor([v]) for k, v in s.items()}})
            mean_kl = g["seq_kl"]
            record = {
                "step": update, "phase": "policy",
                "objective/kl": mean_kl,
                "objective/scores": g["scores"],
                "objective/non_score_reward": g["non_score_reward"],
                "objective/rlhf_reward": g["scores"] + g["non_score_reward"],
                "objective/entropy": g["seq_entropy"],
                "objective/eos_rate": g["eos_rate"],
                "objective/length": g["length"],
                "ppo/policy/approxkl_avg": g["approxkl"], "ppo/policy/clipfrac_avg": g["clipfrac"],
                "ppo/loss/policy_avg": g["pg_loss"], "ppo/loss/value_avg": g["vf_loss"],
                "ppo/val/clipfrac_avg": g["vf_clipfrac"], "ppo/policy/entropy_avg": g["entropy"],
                "ppo/val/ratio": g["ratio"], "ppo/val/error": g["vf_error"],
                "ppo/lr": optimizer.param_groups[0]["lr"], "ppo/kl_coef": kl_ctl.value,
                "ppo/elapsed_s": time.time() - t0,
            }
            run.log(record)
            kl_ctl.update(mean_kl, len(prompts) * acc.num_processes)
            if update % cfg.sample_table_every == 0 or update == cfg.updates:
                log_sample_table(ctx, update, prompts, ro.responses, ro.scores,
                                 ((ro.logprobs - ro.ref_logprobs) * ro.mask).sum(1))
            if update % cfg.eval_every == 0 or update == cfg.updates:
                last_eval = evaluate(update)
            if update % cfg.checkpoint_every == 0 and update < cfg.updates:
                checkpoint(ctx, update=update, model=pv, optimizer=optimizer, kl_ctl=kl_ctl, generator=gen,
                           np_rng=np_rng)
            advance(1, score=record["objective/scores"], kl=mean_kl)

    save_policy(ctx, pv.lm, last_eval)
    report_final("PPO", last_eval, cfg.updates)
    return last_eval

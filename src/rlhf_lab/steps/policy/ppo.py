"""Step 4 — PPO with a per-token KL penalty to the frozen SFT reference (Ziegler et al. 2019; Stiennon et
al. 2020; Ouyang et al. 2022), with the implementation details of Huang et al. 2022/2024 ("The N+
implementation details of RLHF with PPO").

Shapes: B rollout batch, P prompt tokens (left padded), R response tokens (right padded after EOS),
T = P + R, V vocab.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_lab.models.generation import left_pad, sample_loop
from rlhf_lab.models.heads import PolicyAndValue, ScalarHeadModel, last_index
from rlhf_lab.models.lm import save_lm
from rlhf_lab.runfolder import atomic_dir, write_json
from rlhf_lab.steps.common import Context, join_query_response, response_logits, seed_everything
from rlhf_lab.steps.evaluate import evaluate_policy
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
from rlhf_lab.steps.policy.checkpoint import load_checkpoint, save_checkpoint
from rlhf_lab.steps.policy.kl import make_kl_controller
from rlhf_lab.ui import info, progress
from rlhf_lab.world import hash_seed


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
    """Sample responses and compute everything PPO needs about them, without gradients."""
    cfg, tok, device = ctx.cfg.policy, ctx.tokenizer, ctx.device
    pad, eos = tok.pad_token_id, tok.eos_token_id
    query = left_pad(prompt_ids, pad, device)
    # 1. generate with the current policy (KV cache, left padding; pad never sampled)
    responses = sample_loop(pv.lm, query, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            eos_token_id=eos, pad_token_id=pad, generator=generator)  # (B, R)
    ids, mask, pos, rmask = join_query_response(query, responses, pad)
    P = query.input_ids.shape[1]
    # 2. logprobs under π (with the values V of the states before each token, same forward where shared)
    #    and under π_ref, both from logits / T: the distribution that was sampled
    logits, values = pv(ids, mask, pos)
    logprobs = token_logprobs(logits[:, P - 1: -1], responses, temperature=cfg.temperature,
                              pad_token_id=pad)  # (B, R)
    values = values[:, P - 1: -1]  # (B, R)
    ref_logprobs = token_logprobs(response_logits(ref, ids, mask, pos, P), responses,
                                  temperature=cfg.temperature, pad_token_id=pad)  # (B, R)
    # 3. score at the last real token; a response that never stopped gets a fixed penalty
    raw = rm(ids, mask, pos)  # (B, T)
    scores = rm.gain * raw.gather(1, last_index(mask)[:, None]).squeeze(1) + rm.bias  # (B,)
    contain_eos = (responses == eos).any(1)
    scores = torch.where(contain_eos, scores, scores - cfg.missing_eos_penalty)
    return Rollout(query.input_ids, query.attention_mask, responses, logprobs, ref_logprobs, values * rmask,
                   scores, rmask, contain_eos)


def compute_rewards(ro: Rollout, *, kl_coef: float, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: −β·KL_t on every token, plus the score on the last real token. → (B, R) each."""
    kl = kl_per_token(ro.logprobs, ro.ref_logprobs, estimator) * ro.mask  # (B, R)
    non_score_reward = -kl_coef * kl
    rewards = non_score_reward.clone()
    last = (ro.mask.sum(1) - 1).clamp(min=0)  # (B,) index of EOS (or of the last token if truncated)
    rewards[torch.arange(rewards.shape[0]), last] += ro.scores
    return rewards, non_score_reward


def ppo_update(ctx: Context, pv, optimizer, ro: Rollout, advantages: torch.Tensor,
               returns: torch.Tensor, *, rng: np.random.Generator) -> dict[str, float]:
    """PPO epochs over one rollout: batch → minibatches → microbatches, reshuffled every epoch."""
    cfg, acc, pad = ctx.cfg.policy, ctx.accelerator, ctx.tokenizer.pad_token_id
    B = ro.responses.shape[0]
    mb_size = max(1, math.ceil(B / cfg.minibatches))
    micro = max(1, min(cfg.microbatch_size, mb_size))
    ids, mask, pos, _ = join_query_response(_Q(ro.query_ids, ro.query_mask), ro.responses, pad)
    P = ro.query_ids.shape[1]
    stats: dict[str, list[float]] = {k: [] for k in ("approxkl", "clipfrac", "pg_loss", "vf_loss", "vf_clipfrac",
                                                      "entropy", "ratio", "vf_error")}
    pv.train()
    for _epoch in range(cfg.ppo_epochs):
        order = rng.permutation(B)
        for mb_start in range(0, B, mb_size):
            mb = order[mb_start: mb_start + mb_size]
            for mc_start in range(0, len(mb), micro):
                idx = torch.as_tensor(mb[mc_start: mc_start + micro], device=ids.device)
                # Drop the columns that are padding in every row of this microbatch: same result, less work.
                lo = int(ro.query_mask[idx].argmax(1).min())  # first real prompt token
                r_len = max(1, int(ro.mask[idx].sum(1).max()))  # longest response here
                p_len = P - lo
                sl = slice(lo, P + r_len)
                m = ro.mask[idx, :r_len]
                logits, vpred = pv(ids[idx, sl], mask[idx, sl], pos[idx, sl])  # (b, t, V), (b, t)
                logits, vpred = logits[:, p_len - 1: -1], vpred[:, p_len - 1: -1]  # (b, r, V), (b, r)
                new_logprobs = token_logprobs(logits, ro.responses[idx, :r_len], temperature=cfg.temperature,
                                              pad_token_id=pad)
                pg_loss, pg_stats = ppo_policy_loss(new_logprobs, ro.logprobs[idx, :r_len],
                                                    advantages[idx, :r_len], m, cliprange=cfg.cliprange)
                vf_loss, vf_stats = ppo_value_loss(vpred, ro.values[idx, :r_len], returns[idx, :r_len], m,
                                                   cliprange_value=cfg.cliprange_value)
                loss = pg_loss + cfg.vf_coef * vf_loss
                acc.backward(loss * len(idx) / len(mb))  # microbatches add up to the minibatch mean
                with torch.no_grad():
                    ent = masked_mean(entropy_from_logits(logits.detach() / cfg.temperature), m)
                    pg_loss, vf_loss = pg_loss.detach(), vf_loss.detach()
                for k, v in (("approxkl", pg_stats["approxkl"]), ("clipfrac", pg_stats["clipfrac"]),
                             ("pg_loss", pg_loss), ("vf_loss", vf_loss), ("vf_clipfrac", vf_stats["clipfrac"]),
                             ("entropy", ent), ("ratio", pg_stats["ratio"]), ("vf_error", vf_stats["error"])):
                    stats[k].append(v.item() if torch.is_tensor(v) else float(v))
            acc.clip_grad_norm_(pv.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {k: float(np.mean(v)) for k, v in stats.items()}


@dataclass
class _Q:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def rl_prompts(ctx: Context, update: int) -> list:
    """The prompts of rollout `update` (a pure function of the seed and the update: resume-safe)."""
    n = ctx.cfg.policy.batch_size
    per_proc = max(1, n // ctx.accelerator.num_processes)
    prompts = ctx.world.prompts("train", n, seed=hash_seed(ctx.cfg.seed, 1000 + update) % 2**31)
    rank = ctx.accelerator.process_index
    return prompts[rank * per_proc: (rank + 1) * per_proc]


def run_ppo(ctx: Context) -> dict:
    """The PPO loop, resumable from its last checkpoint in `run/policy_ckpt`."""
    cfg, acc, run = ctx.cfg.policy, ctx.accelerator, ctx.run
    seed_everything(ctx.cfg.seed + 4)
    ref = ctx.sft_lm().to(ctx.device).eval()  # π_ref: frozen
    for p in ref.parameters():
        p.requires_grad_(False)
    rm = ctx.reward_model().to(ctx.device).eval()
    for p in rm.parameters():
        p.requires_grad_(False)
    # V: a head on the policy's trunk, or a model of its own initialised from the reward model
    value_model = ScalarHeadModel.load(run / "reward") if cfg.value_model == "separate" else None
    pv = PolicyAndValue(ctx.sft_lm(), value_model=value_model)
    optimizer = torch.optim.AdamW(pv.parameters(), lr=cfg.lr, eps=1e-5)
    kl_ctl = make_kl_controller(cfg)
    gen = torch.Generator().manual_seed(hash_seed(ctx.cfg.seed, 41 + acc.process_index) % 2**31)
    eval_gen_seed = hash_seed(ctx.cfg.seed, 43) % 2**31
    np_rng = np.random.default_rng(hash_seed(ctx.cfg.seed, 47 + acc.process_index) % 2**31)
    start = 0
    ckpt = load_checkpoint(run / "policy_ckpt", model=pv, optimizer=optimizer)
    if ckpt is not None:
        start = ckpt["update"]
        kl_ctl.value = ckpt["kl_coef"]
        gen.set_state(ckpt["generator"])
        np_rng.bit_generator.state = ckpt["np_rng"]
        # Records logged after the checkpoint belong to work that is about to be redone.
        run.truncate_metrics(lambda r: r.get("phase") != "policy" or r.get("step", 0) <= start)
        info(f"PPO: resuming from update {start}")
    pv_wrapped, optimizer = acc.prepare(pv, optimizer)
    eval_prompts = ctx.world.prompts("eval", ctx.cfg.eval.n_prompts, seed=ctx.cfg.seed)

    def evaluate(update: int) -> dict:
        summary, _records = evaluate_policy(ctx, pv.lm, ref=ref, rm=rm, prompts=eval_prompts,
                                           generator=torch.Generator().manual_seed(eval_gen_seed),
                                           temperature=ctx.cfg.eval.temperature,
                                           max_new_tokens=cfg.max_new_tokens)
        run.log({"step": update, "phase": "policy", **summary})
        return summary

    if start == 0:
        evaluate(0)
    t0 = time.time()
    last_eval: dict = {}
    with progress("PPO", cfg.updates) as advance:
        advance(start)
        for update in range(start + 1, cfg.updates + 1):
            # learning-rate annealing: linear to 0 over the updates
            frac = 1.0 - (update - 1) / cfg.updates if cfg.anneal_lr else 1.0
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * frac
            prompts = rl_prompts(ctx, update)
            ro = rollout(ctx, pv, ref, rm, ctx.prompt_ids(prompts), generator=gen)
            # 5. per-token rewards: −β·KL on every token, the score on the last
            rewards, non_score_reward = compute_rewards(ro, kl_coef=kl_ctl.value, estimator=cfg.kl_estimator)
            if cfg.whiten_rewards:
                rewards = masked_whiten(rewards, ro.mask, shift_mean=False)
            # 6. advantages with GAE, whitened over the batch
            advantages, returns = gae(rewards, ro.values, ro.mask, gamma=cfg.gamma, lam=cfg.lam)
            advantages = masked_whiten(advantages, ro.mask)
            # 7. PPO epochs
            s = ppo_update(ctx, pv_wrapped, optimizer, ro, advantages, returns, rng=np_rng)
            # 8. logging and the KL controller
            kl_seq = (kl_per_token(ro.logprobs, ro.ref_logprobs, cfg.kl_estimator) * ro.mask).sum(1)  # (B,)
            mean_kl = float(kl_seq.mean())
            record = {
                "step": update, "phase": "policy",
                "objective/kl": mean_kl,
                "objective/scores": float(ro.scores.mean()),
                "objective/non_score_reward": float(non_score_reward.sum(1).mean()),
                "objective/rlhf_reward": float(ro.scores.mean() + non_score_reward.sum(1).mean()),
                "objective/entropy": float((-ro.logprobs * ro.mask).sum(1).mean()),
                "objective/eos_rate": float(ro.contain_eos.float().mean()),
                "objective/length": float(ro.mask.sum(1).float().mean()),
                "ppo/policy/approxkl_avg": s["approxkl"], "ppo/policy/clipfrac_avg": s["clipfrac"],
                "ppo/loss/policy_avg": s["pg_loss"], "ppo/loss/value_avg": s["vf_loss"],
                "ppo/val/clipfrac_avg": s["vf_clipfrac"], "ppo/policy/entropy_avg": s["entropy"],
                "ppo/val/ratio": s["ratio"], "ppo/val/error": s["vf_error"],
                "ppo/lr": optimizer.param_groups[0]["lr"], "ppo/kl_coef": kl_ctl.value,
                "ppo/elapsed_s": time.time() - t0,
            }
            run.log(record)
            kl_ctl.update(mean_kl, len(prompts) * acc.num_processes)
            if update % cfg.sample_table_every == 0 or update == cfg.updates:
                _log_sample_table(ctx, update, prompts, ro)
            if update % cfg.eval_every == 0 or update == cfg.updates:
                last_eval = evaluate(update)
            if acc.is_main_process and (update % cfg.checkpoint_every == 0 and update < cfg.updates):
                save_checkpoint(run / "policy_ckpt", update=update, model=pv, optimizer=optimizer,
                                kl_coef=kl_ctl.value, generator=gen.get_state(), np_rng=np_rng.bit_generator.state)
            advance(1, score=record["objective/scores"], kl=mean_kl)

    if acc.is_main_process:
        with atomic_dir(run / "policy") as tmp:
            save_lm(pv.lm, ctx.tokenizer, tmp)
            write_json(tmp / "final_eval.json", last_eval)
    info(f"PPO: {cfg.updates} updates; held-out proxy reward {last_eval.get('eval/proxy_reward', float('nan')):+.2f}, "
         f"gold utility {last_eval.get('eval/gold_utility', float('nan')):+.2f}, KL {last_eval.get('eval/kl', 0):.2f}")
    return last_eval


def _log_sample_table(ctx: Context, update: int, prompts, ro: Rollout, n: int = 8) -> None:
    """A few (prompt, response, score, KL) rows, appended to samples_table.jsonl."""
    from rlhf_lab.models.tokenizer import decode_response

    kl = ((ro.logprobs - ro.ref_logprobs) * ro.mask).sum(1)
    rows = [{"step": update, "prompt": ctx.prompt_text(p), "response": decode_response(ctx.tokenizer, r.tolist()),
             "score": float(s), "kl": float(k)}
            for p, r, s, k in list(zip(prompts, ro.responses, ro.scores, kl, strict=True))[:n]]
    path = ctx.run / "samples_table.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))

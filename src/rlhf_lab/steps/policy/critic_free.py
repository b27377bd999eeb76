"""The loop RLOO and GRPO share: k completions per prompt scored by the reward model, an advantage per
completion computed from its group (no value function), then clipped policy-gradient epochs. What differs —
where the KL goes, the advantage, the loss — is a `CriticFree` (see rloo.py and grpo.py).

Shapes: B = N·k completions (N prompts, k per prompt, siblings adjacent), P prompt tokens, R response tokens,
V vocab.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_lab.steps.common import Context, join_query_response, seed_everything
from rlhf_lab.steps.losses import entropy_from_logits, kl_per_token, masked_mean, token_logprobs
from rlhf_lab.steps.policy.kl import make_kl_controller
from rlhf_lab.steps.policy.loop import (
    EvalPoints,
    Samples,
    annealed_lr,
    checkpoint,
    log_sample_table,
    minibatch_slices,
    process_seeds,
    reference_and_reward,
    report_final,
    resume,
    rl_prompts,
    sample_and_score,
    save_policy,
    set_lr,
    trimmed,
)
from rlhf_lab.ui import progress


@dataclass(frozen=True)
class CriticFree:
    """One critic-free algorithm: its name (also its metric namespace) and its three choices."""

    name: str
    # True: the reward is r − β·KL(sequence) (RLOO); False: β·KL is a term of the loss (GRPO)
    kl_in_reward: bool
    # rewards (N, k) → advantages (N, k)
    advantages: Callable[[torch.Tensor], torch.Tensor]
    # (logprobs, old_logprobs, ref_logprobs (b, r), advantages (b,), mask (b, r), *, cliprange, beta)
    #   → (loss, stats); a mean over completions, so microbatches are weighted by their number of completions
    loss: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def policy_update(ctx: Context, algo: CriticFree, policy, optimizer, smp: Samples, advantages: torch.Tensor, *,
                  beta: float, rng: np.random.Generator) -> tuple[dict[str, float], torch.Tensor]:
    """Epochs over one batch: minibatches (one optimiser step each) → microbatches, reshuffled every epoch.

    Returns the mean statistics and log π_old of every token (B, R): when the batch is optimised once and
    `smp.logprobs` is None, the training forward itself provides them (π_old = π before the only step)."""
    cfg, acc, pad = ctx.cfg.policy, ctx.accelerator, ctx.tokenizer.pad_token_id
    ids, mask, pos, _ = join_query_response(smp.query, smp.responses, pad)
    old_logprobs = smp.logprobs if smp.logprobs is not None else torch.zeros_like(smp.ref_logprobs)
    stats: dict[str, list[float]] = {k: [] for k in ("loss", "approxkl", "clipfrac", "ratio", "entropy", "kl")}
    policy.train()
    for _epoch in range(cfg.ppo_epochs):
        for micros in minibatch_slices(smp.responses.shape[0], cfg, rng):
            n_mb = sum(len(mc) for mc in micros)
            for micro in micros:
                idx = torch.as_tensor(micro, device=ids.device)
                sl, _, r_len = trimmed(smp.query.attention_mask, smp.mask, idx)
                m = smp.mask[idx, :r_len]
                logits = policy(input_ids=ids[idx, sl], attention_mask=mask[idx, sl], position_ids=pos[idx, sl],
                                logits_to_keep=r_len + 1).logits[:, :-1]  # (b, r, V)
                logprobs = token_logprobs(logits, smp.responses[idx, :r_len], temperature=cfg.temperature,
                                          pad_token_id=pad)  # (b, r)
                if smp.logprobs is None:
                    old_logprobs[idx, :r_len] = logprobs.detach()
                loss, s = algo.loss(logprobs, old_logprobs[idx, :r_len], smp.ref_logprobs[idx, :r_len],
                                    advantages[idx], m, cliprange=cfg.cliprange, beta=beta)
                acc.backward(loss * len(idx) / n_mb)
                with torch.no_grad():
                    s["entropy"] = masked_mean(entropy_from_logits(logits.detach() / cfg.temperature), m)
                    s["loss"] = loss.detach()
                for k in stats:
                    if k in s:
                        stats[k].append(float(s[k]))
            acc.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {k: float(np.mean(v)) for k, v in stats.items() if v}, old_logprobs


def run_critic_free(ctx: Context, algo: CriticFree) -> dict:
    """The RLOO / GRPO loop, resumable from its last checkpoint in `run/policy_ckpt`."""
    cfg, acc, run, ns = ctx.cfg.policy, ctx.accelerator, ctx.run, algo.name
    k = cfg.samples_per_prompt
    seed_everything(ctx.cfg.seed + 4)
    ref, rm = reference_and_reward(ctx)  # π_ref and r: frozen
    policy = ctx.sft_lm().to(ctx.device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, eps=1e-5)
    kl_ctl = make_kl_controller(cfg)
    seeds = process_seeds(ctx.cfg.seed, acc.process_index)
    gen = torch.Generator().manual_seed(seeds["sample"])
    np_rng = np.random.default_rng(seeds["shuffle"])
    start = resume(ctx, model=policy, optimizer=optimizer, kl_ctl=kl_ctl, generator=gen, np_rng=np_rng)
    policy_wrapped, optimizer = acc.prepare(policy, optimizer)
    evaluate = EvalPoints(ctx, policy, ref=ref, rm=rm)
    # Optimised once (one epoch, one minibatch): π_old = π, so the training forward gives log π_old for free.
    once = cfg.ppo_epochs * cfg.minibatches == 1

    if start == 0:
        evaluate(0)
    t0 = time.time()
    last_eval: dict = {}
    with progress(ns.upper(), cfg.updates) as advance:
        advance(start)
        for update in range(start + 1, cfg.updates + 1):
            # 1. k completions for each of batch_size / k prompts (siblings adjacent), scored by the reward model;
            #    log π_ref for the KL, and log π_old unless the training forward can provide it
            prompts = rl_prompts(ctx, update, cfg.batch_size // k)
            prompt_ids = [ids for ids in ctx.prompt_ids(prompts) for _ in range(k)]
            beta = kl_ctl.value
            need_old = not once or (algo.kl_in_reward and beta > 0)
            smp = sample_and_score(ctx, policy, ref, rm, prompt_ids, generator=gen, with_logprobs=need_old)
            # 2. rewards (RLOO: r − β·KL of the whole completion) and advantages within each group of k
            rewards = smp.scores
            if algo.kl_in_reward and beta > 0:
                rewards = rewards - beta * (kl_per_token(smp.logprobs, smp.ref_logprobs, cfg.kl_estimator)
                                            * smp.mask).sum(1)
            advantages = algo.advantages(rewards.view(-1, k)).reshape(-1)  # (N, k) → (B,)
            # 3. learning-rate annealing: linear to 0 over the updates
            set_lr(optimizer, annealed_lr(cfg, update, cfg.updates))
            # 4. clipped policy-gradient epochs
            s, old_logprobs = policy_update(ctx, algo, policy_wrapped, optimizer, smp, advantages, beta=beta,
                                            rng=np_rng)
            # 5. logging, the KL controller, the sample table, evaluation and checkpoints
            kl_seq = (kl_per_token(old_logprobs, smp.ref_logprobs, cfg.kl_estimator) * smp.mask).sum(1)  # (B,)
            mean_kl = float(kl_seq.mean())
            grouped = smp.scores.view(-1, k)
            record = {
                "step": update, "phase": "policy",
                "objective/kl": mean_kl,
                "objective/scores": float(smp.scores.mean()),
                "objective/non_score_reward": -beta * mean_kl,
                "objective/rlhf_reward": float(smp.scores.mean()) - beta * mean_kl,
                "objective/entropy": float((-old_logprobs * smp.mask).sum(1).mean()),
                "objective/eos_rate": float(smp.contain_eos.float().mean()),
                "objective/length": float(smp.mask.sum(1).float().mean()),
                f"{ns}/policy/approxkl_avg": s["approxkl"], f"{ns}/policy/clipfrac_avg": s["clipfrac"],
                f"{ns}/loss/policy_avg": s["loss"], f"{ns}/policy/entropy_avg": s["entropy"],
                f"{ns}/val/ratio": s["ratio"], f"{ns}/advantages/std": float(advantages.std()),
                f"{ns}/frac_reward_zero_std": float((grouped.std(1) < 1e-6).float().mean()),
                f"{ns}/lr": optimizer.param_groups[0]["lr"], f"{ns}/kl_coef": beta,
                f"{ns}/elapsed_s": time.time() - t0,
            }
            if "kl" in s:
                record[f"{ns}/kl"] = s["kl"]  # the mean per-token k3 term of the loss
            run.log(record)
            kl_ctl.update(mean_kl, len(prompt_ids) * acc.num_processes)
            if update % cfg.sample_table_every == 0 or update == cfg.updates:
                log_sample_table(ctx, update, [p for p in prompts for _ in range(k)], smp.responses, smp.scores,
                                 ((old_logprobs - smp.ref_logprobs) * smp.mask).sum(1))
            if update % cfg.eval_every == 0 or update == cfg.updates:
                last_eval = evaluate(update)
            if update % cfg.checkpoint_every == 0 and update < cfg.updates:
                checkpoint(ctx, update=update, model=policy, optimizer=optimizer, kl_ctl=kl_ctl, generator=gen,
                           np_rng=np_rng)
            advance(1, score=record["objective/scores"], kl=mean_kl)

    save_policy(ctx, policy, last_eval)
    report_final(ns.upper(), last_eval, cfg.updates)
    return last_eval

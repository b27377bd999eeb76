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
from functools import partial

import numpy as np
import torch

from rlhf_lab.steps.common import Context, seed_everything
from rlhf_lab.steps.losses import entropy_from_logits, kl_per_token, masked_mean, token_logprobs
from rlhf_lab.steps.policy.kl import make_kl_controller
from rlhf_lab.steps.policy.loop import (
    EvalPoints,
    Samples,
    annealed_lr,
    checkpoint,
    global_masked_moments,
    global_means,
    log_sample_table,
    minibatch_slices,
    policy_reference_reward,
    process_seeds,
    report_final,
    resume,
    rl_prompts,
    sample_and_score,
    save_policy,
    set_lr,
)
from rlhf_lab.steps.policy.prefix import GroupedLM, distinct_prompts
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


def group_advantages(algo: CriticFree, smp: Samples, old_logprobs: torch.Tensor | None, *, k: int, beta: float,
                     estimator: str) -> torch.Tensor:
    """The algorithm's advantages within each group of k from the rewards: the scores, minus β·KL(π_old ‖ π_ref)
    of each whole completion when β > 0 (RLOO). → (B,)."""
    rewards = smp.scores  # (B,)
    if beta:
        rewards = rewards - beta * (kl_per_token(old_logprobs, smp.ref_logprobs, estimator) * smp.mask).sum(1)
    return algo.advantages(rewards.view(-1, k)).reshape(-1)  # (N, k) → (B,)


def policy_update(ctx: Context, algo: CriticFree, model: GroupedLM, optimizer, smp: Samples,
                  advantages: torch.Tensor | Callable[[torch.Tensor], torch.Tensor], *, beta: float,
                  rng: np.random.Generator) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Epochs over one batch: minibatches of whole groups (one optimiser step each) → microbatches, reshuffled
    every epoch. `model`: the policy in a GroupedLM (each prompt's forward shared by its completions).

    When the batch is optimised once and `smp.logprobs` is None, the training forward itself gives log π_old
    (π_old = π before the only step). `advantages` may then be a function of log π_old (B, R) → (B,), for a
    reward that needs it (RLOO's KL), evaluated after the forward; that needs the batch in one microbatch.
    Returns the mean statistics, log π_old (B, R) and the advantages (B,)."""
    cfg, acc, pad = ctx.cfg.policy, ctx.accelerator, ctx.tokenizer.pad_token_id
    k, T = cfg.k, ctx.cfg.generation.temperature
    query = smp.query
    old_logprobs = smp.logprobs if smp.logprobs is not None else torch.zeros_like(smp.ref_logprobs)
    stats: dict[str, list[float]] = {k: [] for k in ("loss", "approxkl", "clipfrac", "ratio", "entropy", "kl")}
    model.train()
    for _epoch in range(cfg.epochs):
        for micros in minibatch_slices(smp.responses.shape[0], cfg, rng, group=k):
            n_mb = sum(len(mc) for mc in micros)
            for micro in micros:
                idx = torch.as_tensor(micro, device=smp.responses.device)
                rows, prompt_of, cols = distinct_prompts(idx, k, query.attention_mask)
                r_len = max(1, int(smp.mask[idx].sum(1).max()))  # longest response here
                m = smp.mask[idx, :r_len]
                logits = model(query.input_ids[rows, cols], query.attention_mask[rows, cols], prompt_of,
                               smp.responses[idx, :r_len], m)  # (b, r, V)
                logprobs = token_logprobs(logits, smp.responses[idx, :r_len], temperature=T,
                                          pad_token_id=pad)  # (b, r)
                if smp.logprobs is None:
                    old_logprobs[idx, :r_len] = logprobs.detach()
                if callable(advantages):  # the reward depends on log π_old, which this (only) forward provides
                    if len(idx) != smp.responses.shape[0]:
                        raise ValueError("advantages that depend on log π_old need the whole batch in one microbatch")
                    advantages = advantages(old_logprobs)
                loss, s = algo.loss(logprobs, old_logprobs[idx, :r_len], smp.ref_logprobs[idx, :r_len],
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


def run_critic_free(ctx: Context, algo: CriticFree) -> dict:
    """The RLOO / GRPO loop, resumable from its last checkpoint in `run/policy_ckpt`."""
    cfg, acc, run, ns = ctx.cfg.policy, ctx.accelerator, ctx.run, algo.name
    k = cfg.k
    seed_everything(ctx.cfg.seed + 4)
    policy, ref, rm = policy_reference_reward(ctx)  # π (LoRA adapters if configured), π_ref and r: frozen
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, eps=1e-5)
    kl_ctl = make_kl_controller(cfg)
    seeds = process_seeds(ctx.cfg.seed, acc.process_index)
    gen = torch.Generator().manual_seed(seeds["sample"])
    np_rng = np.random.default_rng(seeds["shuffle"])
    start = resume(ctx, model=policy, optimizer=optimizer, kl_ctl=kl_ctl, generator=gen, np_rng=np_rng)
    policy_grouped, optimizer = acc.prepare(GroupedLM(policy), optimizer)
    evaluate = EvalPoints(ctx, policy, ref=ref, rm=rm)
    # Optimised once (one epoch, one minibatch): π_old = π, so the training forward gives log π_old for free.
    once = cfg.epochs * cfg.minibatches == 1

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
            kl_reward = algo.kl_in_reward and beta > 0
            one_forward = once and cfg.microbatch_size >= len(prompt_ids)  # the training forward gives log π_old
            smp = sample_and_score(ctx, policy, ref, rm, prompt_ids, generator=gen, k=k,
                                   with_logprobs=not once or (kl_reward and not one_forward))
            # 2. rewards (RLOO: r − β·KL of the whole completion) and advantages within each group of k
            advantages_of = partial(group_advantages, algo, smp, k=k, beta=beta if kl_reward else 0.0,
                                    estimator=cfg.kl_estimator)
            advantages = advantages_of if kl_reward and smp.logprobs is None else advantages_of(smp.logprobs)
            # 3. learning-rate annealing: linear to 0 over the updates
            set_lr(optimizer, annealed_lr(cfg, update, cfg.updates))
            # 4. clipped policy-gradient epochs
            s, old_logprobs, advantages = policy_update(ctx, algo, policy_grouped, optimizer, smp, advantages,
                                                        beta=beta, rng=np_rng)
            # 5. logging, the KL controller, the sample table, evaluation and checkpoints
            #    from statistics over every process's completions (each process steers β by the same KL)
            kl_seq = (kl_per_token(old_logprobs, smp.ref_logprobs, cfg.kl_estimator) * smp.mask).sum(1)  # (B,)
            group_scores = smp.scores.view(-1, k)  # (N, k)
            g = global_means(acc, {
                "seq_kl": kl_seq, "scores": smp.scores, "seq_entropy": (-old_logprobs * smp.mask).sum(1),
                "eos_rate": smp.contain_eos.float(), "length": smp.mask.sum(1).float(),
                "zero_std": (group_scores.std(1) < 1e-6).float(), **{key: torch.tensor([v]) for key, v in s.items()}})
            _, adv_var = global_masked_moments(acc, advantages, torch.ones_like(advantages))
            mean_kl = g["seq_kl"]
            record = {
                "step": update, "phase": "policy",
                "objective/kl": mean_kl,
                "objective/scores": g["scores"],
                "objective/non_score_reward": -beta * mean_kl,
                "objective/rlhf_reward": g["scores"] - beta * mean_kl,
                "objective/entropy": g["seq_entropy"],
                "objective/eos_rate": g["eos_rate"],
                "objective/length": g["length"],
                f"{ns}/policy/approxkl_avg": g["approxkl"], f"{ns}/policy/clipfrac_avg": g["clipfrac"],
                f"{ns}/loss/policy_avg": g["loss"], f"{ns}/policy/entropy_avg": g["entropy"],
                f"{ns}/val/ratio": g["ratio"], f"{ns}/advantages/std": float(adv_var.sqrt()),
                f"{ns}/frac_reward_zero_std": g["zero_std"],
                f"{ns}/lr": optimizer.param_groups[0]["lr"], f"{ns}/kl_coef": beta,
                f"{ns}/elapsed_s": time.time() - t0,
            }
            if "kl" in s:
                record[f"{ns}/kl"] = g["kl"]  # the mean per-token k3 term of the loss
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

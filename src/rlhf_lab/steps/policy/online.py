"""The one online loop of PPO, RLOO and GRPO: it owns the rollout (sampling through the generation backend,
log π_ref, scores), the learning-rate schedule, the KL controller, statistics over every process, logging,
evaluation points, checkpoints and resume. An algorithm supplies only what differs — the module it trains and
its update (advantages and loss) — behind `OnlineAlgorithm`.

Shapes: B = N·k completions in a rollout (N prompts, k completions each, siblings adjacent; k = 1 for PPO),
P prompt tokens (left padded), R response tokens (right padded after EOS), T = P + R, V vocab.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from rlhf_lab.models.generation import Batch, left_pad, sample_batch
from rlhf_lab.models.heads import ScalarHeadModel
from rlhf_lab.models.logprobs import response_logits, sequence_kl_from_logprobs
from rlhf_lab.steps.common import Context, adamw, join_query_response, seed_everything
from rlhf_lab.steps.losses import kl_per_token, token_logprobs
from rlhf_lab.steps.policy.gold import GoldReward
from rlhf_lab.steps.policy.kl import make_kl_controller
from rlhf_lab.steps.policy.loop import (
    EvalPoints,
    annealed_lr,
    by_length,
    checkpoint,
    eos_penalised,
    eval_points,
    global_means,
    log_sample_table,
    policy_reference_reward,
    process_seeds,
    report_final,
    resume,
    rl_prompts,
    score_completions,
    set_lr,
)
from rlhf_lab.steps.policy.prefix import distinct_prompts, grouped_response_logits
from rlhf_lab.steps.policy.warning import Watch
from rlhf_lab.ui import progress
from rlhf_lab.world import Prompt


@dataclass
class Rollout:
    """Completions and what is known about them before optimisation. query (B, P); the rest (B, R) or (B,)."""

    query: Batch
    responses: torch.Tensor
    mask: torch.Tensor  # 1 on response tokens up to and including EOS
    scores: torch.Tensor  # (B,) after the missing-EOS penalty
    contain_eos: torch.Tensor  # (B,)
    ref_logprobs: torch.Tensor  # log π_ref(y_t), under logits / T
    logprobs: torch.Tensor | None = None  # log π_old(y_t), when computed before the update
    values: torch.Tensor | None = None  # V(s_t) under the old value function (PPO)


@torch.no_grad()
def rollout(ctx: Context, policy, ref, rm: ScalarHeadModel, prompt_ids: list[list[int]], *,
            generator: torch.Generator, k: int = 1, gold: GoldReward | None = None,
            prompts: list[Prompt] | None = None) -> Rollout:
    """Sample one completion per entry of `prompt_ids` (k adjacent copies of each prompt) with the configured
    generation backend, then log π_ref and the reward model's scores, in the run's precision. With k > 1 the
    copies of a prompt share its forward (prefix.py); with k = 1 each sequence is one plain forward. With `gold`
    (policy.optimise: gold) the scores are the world's gold utility of each completion for `prompts` (the world's
    record of each entry of `prompt_ids`), and the reward model is not run."""
    gen_cfg, tok = ctx.cfg.generation, ctx.tokenizer
    pad, eos, T = tok.pad_token_id, tok.eos_token_id, gen_cfg.temperature
    if gold is not None and (prompts is None or len(prompts) != len(prompt_ids)):
        raise ValueError("a gold rollout needs the world's record of every prompt (prompts, one per prompt_ids entry)")
    distinct = left_pad(prompt_ids[::k], pad, ctx.device)  # (N, P)
    each = torch.arange(len(prompt_ids), device=ctx.device) // k  # (B,): the prompt of each completion
    query = Batch(distinct.input_ids[each], distinct.attention_mask[each])  # (B, P)
    was_training = policy.training
    policy.eval()
    with ctx.accelerator.autocast():
        # 1. sample (KV cache, left padding; pad never sampled), each prompt's prefill shared by its k copies
        responses = sample_batch(policy, distinct, backend=ctx.cfg.model.generation_backend, copies=k,
                                 max_new_tokens=gen_cfg.max_new_tokens, temperature=T, eos_token_id=eos,
                                 pad_token_id=pad, generator=generator,
                                 cuda_graph=ctx.cfg.model.cuda_graphs)  # (B, R)
        ids, mask, pos, rmask = join_query_response(query, responses, pad)
        # 2. log π_ref from logits / T, the distribution that was sampled
        if k > 1:
            rows, prompt_of, cols = distinct_prompts(torch.arange(len(prompt_ids), device=ctx.device), k,
                                                     query.attention_mask)
            grouped = (query.input_ids[rows, cols], query.attention_mask[rows, cols], prompt_of, responses, rmask)
            ref_logits = grouped_response_logits(ref, *grouped)  # (B, R, V)
            ref_logprobs = token_logprobs(ref_logits, responses, temperature=T, pad_token_id=pad)  # (B, R)
            # 3. score at the last real token; a completion that never stopped gets a fixed penalty
            if gold is None:
                scores, contain_eos = score_completions(rm, ids, mask, responses, eos_token_id=eos,
                                                        missing_eos_penalty=ctx.cfg.policy.missing_eos_penalty,
                                                        grouped=grouped)
        else:  # 2. and 3. in chunks of similar length (padding is not computed)
            B, dev = len(prompt_ids), responses.device
            ref_logprobs = torch.zeros(responses.shape, device=dev)  # (B, R)
            scores, contain_eos = torch.zeros(B, device=dev), torch.zeros(B, dtype=torch.bool, device=dev)
            for idx, sl, p_len, r_len in by_length(query.attention_mask, rmask, ctx.cfg.policy.microbatch_size):
                part = (ids[idx, sl], mask[idx, sl], pos[idx, sl])
                ref_logprobs[idx, :r_len] = token_logprobs(response_logits(ref, *part, p_len), responses[idx, :r_len],
                                                           temperature=T, pad_token_id=pad)
                if gold is None:
                    scores[idx], contain_eos[idx] = score_completions(
                        rm, part[0], part[1], responses[idx, :r_len], eos_token_id=eos,
                        missing_eos_penalty=ctx.cfg.policy.missing_eos_penalty)
        if gold is not None:  # 3. the truth instead of the reward model, with the same penalty
            scores, contain_eos = eos_penalised(gold.score(prompts, responses), responses, eos_token_id=eos,
                                                missing_eos_penalty=ctx.cfg.policy.missing_eos_penalty)
    policy.train(was_training)
    return Rollout(query, responses, rmask, scores.float(), contain_eos, ref_logprobs)


class OnlineAlgorithm(Protocol):
    """What PPO, RLOO and GRPO each supply to `run_online`."""

    name: str  # also the metric namespace

    def trained(self, ctx: Context, policy: torch.nn.Module) -> torch.nn.Module:
        """The module whose parameters are optimised and checkpointed (PPO: policy and value)."""

    def forward_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the training forward calls, and what DDP wraps."""

    def update(self, ctx: Context, model, wrapped, optimizer, ro: Rollout, *, beta: float,
               rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Advantages and the optimiser steps on one rollout. Returns statistics — each a tensor of this
        process's share ((B,) per sequence or (1,) per process), named under the algorithm's namespace — and
        log π_old (B, R)."""


def completions_per_prompt(cfg) -> int:
    """k of RLOO and GRPO; 1 for PPO."""
    return getattr(cfg, "k", 1)


def run_online(ctx: Context, algo: OnlineAlgorithm) -> dict:
    """Policy optimisation by `algo`, resumable from its last checkpoint in `run/policy_ckpt`."""
    cfg, acc, run, ns = ctx.cfg.policy, ctx.accelerator, ctx.run, algo.name
    k = completions_per_prompt(cfg)
    gold = GoldReward.fit(ctx) if cfg.optimise == "gold" else None  # before the seeds below: it samples
    seed_everything(ctx.cfg.seed + 4)
    policy, ref, rm = policy_reference_reward(ctx)  # π (LoRA adapters if configured), π_ref and r: frozen
    model = algo.trained(ctx, policy)
    optimizer = adamw([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, eps=1e-5)
    kl_ctl = make_kl_controller(cfg)
    seeds = process_seeds(ctx.cfg.seed, acc.process_index)
    gen = torch.Generator().manual_seed(seeds["sample"])
    np_rng = np.random.default_rng(seeds["shuffle"])
    start = resume(ctx, model=model, optimizer=optimizer, kl_ctl=kl_ctl, generator=gen, np_rng=np_rng)
    wrapped, optimizer = acc.prepare(algo.forward_module(model), optimizer)
    evaluate = EvalPoints(ctx, policy, ref=ref, rm=rm)
    points = eval_points(ctx.cfg.eval, cfg.updates)
    watch = Watch(ctx, start=start)  # policy.early_warning: the detectors read what is logged, never gold

    if start == 0:
        watch.observe(0, evaluate(0))
    t0 = time.time()
    last_eval: dict = {}
    with progress(ns.upper(), cfg.updates) as advance:
        advance(start)
        for update in range(start + 1, cfg.updates + 1):
            # 1. this process's prompts of the update, k completions each; sampled, scored, log π_ref
            prompts = rl_prompts(ctx, update, cfg.batch_size // k)
            ro = rollout(ctx, policy, ref, rm, [ids for ids in ctx.prompt_ids(prompts) for _ in range(k)],
                         generator=gen, k=k, gold=gold, prompts=[p for p in prompts for _ in range(k)])
            # 2. learning-rate annealing: linear to 0 over the updates
            set_lr(optimizer, annealed_lr(cfg, update, cfg.updates))
            # 3. the algorithm's advantages and optimiser steps
            beta = kl_ctl.value
            stats, logprobs = algo.update(ctx, model, wrapped, optimizer, ro, beta=beta, rng=np_rng)
            # 4. statistics over every process's completions (so every process steers β by the same KL), the log
            #    and the KL controller
            kl_seq = (kl_per_token(logprobs, ro.ref_logprobs, cfg.kl_estimator) * ro.mask).sum(1)  # (B,)
            g = global_means(acc, {
                "objective/kl": kl_seq, "objective/scores": ro.scores,
                "objective/entropy": (-logprobs * ro.mask).sum(1), "objective/eos_rate": ro.contain_eos.float(),
                "objective/length": ro.mask.sum(1).float(), **{f"{ns}/{key}": v for key, v in stats.items()}})
            record = {"step": update, "phase": "policy", **g,
                      "objective/non_score_reward": -beta * g["objective/kl"],
                      "objective/rlhf_reward": g["objective/scores"] - beta * g["objective/kl"],
                      f"{ns}/lr": optimizer.param_groups[0]["lr"], f"{ns}/kl_coef": beta,
                      f"{ns}/elapsed_s": time.time() - t0}
            run.log(record)
            watch.observe(update, record)
            kl_ctl.update(g["objective/kl"], len(prompts) * k * acc.num_processes)
            # 5. the sample table, evaluation points and checkpoints
            if update % cfg.sample_table_every == 0 or update == cfg.updates:
                log_sample_table(ctx, update, [p for p in prompts for _ in range(k)], ro.responses, ro.scores,
                                 sequence_kl_from_logprobs(logprobs, ro.ref_logprobs, ro.mask))
            if update in points:
                last_eval = evaluate(update)
                watch.observe(update, last_eval)
            if watch.check(update):  # early_warning=stop and a detector fired
                break
            if update % cfg.checkpoint_every == 0 and update < cfg.updates:
                checkpoint(ctx, update=update, model=model, optimizer=optimizer, kl_ctl=kl_ctl, generator=gen,
                           np_rng=np_rng)
            advance(1, score=g["objective/scores"], kl=g["objective/kl"])

    last_eval = watch.save(policy, last_eval, update=evaluate.last_update)
    report_final(ns.upper(), last_eval, watch.stopped_at or cfg.updates)
    return last_eval

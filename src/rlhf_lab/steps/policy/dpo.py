"""Step 4, alternative — DPO: direct preference optimisation (Rafailov et al. 2023). Offline: no sampling and no
reward model in training; the policy is fitted to the preferences with the loss −log σ(β·h), where h is how much
more the policy prefers the chosen response over the rejected one than π_ref does. The reward model is used only
to measure the proxy reward at evaluation points, like for every other algorithm.

Shapes: B pairs, P prompt tokens (left padded), R response tokens (right padded), V vocab.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from rlhf_lab.data import read_preferences
from rlhf_lab.models.generation import left_pad
from rlhf_lab.models.lm import position_ids_from_mask
from rlhf_lab.runfolder import atomic_write_bytes
from rlhf_lab.steps.common import Context, adamw, seed_everything
from rlhf_lab.steps.losses import dpo_loss, token_logprobs
from rlhf_lab.steps.policy.loop import (
    EvalPoints,
    annealed_lr,
    checkpoint,
    eval_points,
    global_means,
    policy_reference_reward,
    report_final,
    resume,
    save_policy,
    set_lr,
    shard,
)
from rlhf_lab.steps.reward import preference_ids, split_rows
from rlhf_lab.ui import progress
from rlhf_lab.world import hash_seed

Triple = tuple[list[int], list[int], list[int]]  # prompt, chosen, rejected token ids (as sampled; EOS if stopped)
REF_CACHE = "dpo_ref_logps.safetensors"


def tokenize_preferences(ctx: Context, rows: list[dict]) -> list[Triple]:
    return [preference_ids(ctx.tokenizer, r) for r in rows]  # the sampled ids, as the reward model sees them


def sequence_logps(model, triples: list[Triple], *, pad_token_id: int, device,
                   pad_in_distribution: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t log π(y_t | x, y_<t) of the chosen and of the rejected response of each pair, both in one forward.
    → (B,), (B,).

    Whole sequences are left padded, so every response ends at the right edge: the batch is as wide as the
    longest prompt + response (not the longest prompt plus the longest response), and logits are computed
    only for the last R positions. The pad token is left out of the distribution, as when sampling;
    `pad_in_distribution` keeps it (the convention of libraries that never mask it, for comparisons)."""
    B = len(triples)
    responses = [c for _, c, _ in triples] + [r for _, _, r in triples]
    batch = left_pad([p + c for p, c, _ in triples] + [p + r for p, _, r in triples], pad_token_id, device)  # (2B, T)
    n = torch.tensor([len(r) for r in responses], device=batch.input_ids.device)  # (2B,)
    R = int(n.max())
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=position_ids_from_mask(batch.attention_mask),
                   logits_to_keep=R + 1).logits[:, :-1]  # (2B, R, V): predictions of the last R tokens
    targets = batch.input_ids[:, -R:]  # (2B, R)
    rmask = torch.arange(R, device=n.device)[None, :] >= (R - n)[:, None]  # (2B, R): the row's last n tokens
    logps = token_logprobs(logits, targets, pad_token_id=None if pad_in_distribution else pad_token_id)
    logps = (logps * rmask).sum(1)  # (2B,)
    return logps[:B], logps[B:]


def _fingerprint(ctx: Context, triples: list[Triple]) -> str:
    """What the cached reference logprobs depend on: the token ids of every pair and the SFT weights file."""
    h = hashlib.sha256(json.dumps(triples).encode())
    weights = ctx.run / "sft" / "model.safetensors"
    if weights.exists():
        st = weights.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


@torch.no_grad()
def reference_logps(ctx: Context, ref, triples: list[Triple], path: Path,
                    batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """log π_ref of every chosen and rejected response, computed once and cached in `path` (safetensors);
    recomputed only when the pairs or the SFT weights changed. → (N,), (N,)."""
    key = _fingerprint(ctx, triples)
    if path.exists():
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("fingerprint") == key:
                return f.get_tensor("chosen"), f.get_tensor("rejected")
    chosen, rejected = [], []
    with progress("DPO reference logprobs", len(triples)) as advance, ctx.accelerator.autocast():
        for i in range(0, len(triples), batch_size):
            c, r = sequence_logps(ref, triples[i: i + batch_size], pad_token_id=ctx.tokenizer.pad_token_id,
                                  device=ctx.device)
            chosen.append(c.float().cpu())
            rejected.append(r.float().cpu())
            advance(len(c))
    chosen_t, rejected_t = torch.cat(chosen), torch.cat(rejected)
    if ctx.is_main:
        atomic_write_bytes(path, save({"chosen": chosen_t, "rejected": rejected_t}, metadata={"fingerprint": key}))
    return chosen_t, rejected_t


@torch.no_grad()
def implicit_reward_accuracy(policy, triples: list[Triple], ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *,
                             pad_token_id: int, device, batch_size: int = 64) -> float:
    """Share of pairs whose implicit reward β·(log π − log π_ref) ranks chosen above rejected (ties count ½)."""
    was_training = policy.training
    policy.eval()
    hits = []
    for i in range(0, len(triples), batch_size):
        c, r = sequence_logps(policy, triples[i: i + batch_size], pad_token_id=pad_token_id, device=device)
        h = (c.float().cpu() - ref_chosen[i: i + batch_size]) - (r.float().cpu() - ref_rejected[i: i + batch_size])
        hits.append((h > 0).float() + 0.5 * (h == 0).float())
    policy.train(was_training)
    return float(torch.cat(hits).mean()) if hits else float("nan")


def run_dpo(ctx: Context) -> dict:
    """DPO over the training preferences (the reward model's training split), resumable from `run/policy_ckpt`."""
    cfg, acc, run = ctx.cfg.policy, ctx.accelerator, ctx.run
    pad = ctx.tokenizer.pad_token_id
    seed_everything(ctx.cfg.seed + 4)
    rows = read_preferences(run / "preferences.parquet")
    train_rows, held_rows = split_rows(rows, ctx.cfg.reward.eval_share, ctx.cfg.seed)
    train, held = tokenize_preferences(ctx, train_rows), tokenize_preferences(ctx, held_rows)
    # π (LoRA adapters if configured); π_ref: frozen; the reward model only measures the proxy reward
    policy, ref, rm = policy_reference_reward(ctx)
    # 1. log π_ref(y|x) of every response, once (cached in the run folder)
    micro = max(1, cfg.microbatch_size // 2)  # pairs per forward: 2 sequences each
    ref_c, ref_r = reference_logps(ctx, ref, train + held, run / REF_CACHE, batch_size=micro)
    ref_c, ref_r = ref_c.to(ctx.device), ref_r.to(ctx.device)
    n = len(train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optimizer = adamw([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, eps=1e-5)
    start = resume(ctx, model=policy, optimizer=optimizer)
    policy_wrapped, optimizer = acc.prepare(policy, optimizer)
    evaluate = EvalPoints(ctx, policy, ref=ref, rm=rm)
    points = eval_points(ctx.cfg.eval, total)

    def held_accuracy(step: int) -> float:
        accuracy = implicit_reward_accuracy(policy, held, ref_c[n:].cpu(), ref_r[n:].cpu(), pad_token_id=pad,
                                            device=ctx.device, batch_size=micro)
        run.log({"step": step, "phase": "policy", "eval/implicit_reward_accuracy": accuracy})
        return accuracy

    if start == 0:
        evaluate(0)
        held_accuracy(0)
    t0 = time.time()
    last_eval: dict = {}
    with progress("DPO", total) as advance:
        advance(start)
        policy.train()
        for step in range(start + 1, total + 1):
            # 2. the batch: a fresh shuffle every epoch, a pure function of the seed (resume-safe)
            epoch, i = divmod(step - 1, steps_per_epoch)
            order = np.random.default_rng(hash_seed(ctx.cfg.seed, 50 + epoch) % 2**31).permutation(n)
            batch = shard(list(order[i * cfg.batch_size: (i + 1) * cfg.batch_size]), acc.process_index,
                          acc.num_processes)
            set_lr(optimizer, annealed_lr(cfg, step, total))
            # 3. log π of chosen and rejected (one forward per microbatch) and the DPO loss
            stats: dict[str, float] = {}
            for j in range(0, len(batch), micro):
                idx = batch[j: j + micro]
                c, r = sequence_logps(policy_wrapped, [train[b] for b in idx], pad_token_id=pad, device=ctx.device)
                loss, s = dpo_loss(c, r, ref_c[idx], ref_r[idx], beta=cfg.kl_coef,
                                   label_smoothing=cfg.label_smoothing, variant=cfg.loss)
                weight = len(idx) / len(batch)  # the loss is a mean over pairs
                acc.backward(loss * weight)
                for key, v in (("loss", loss.detach()), *s.items()):
                    stats[key] = stats.get(key, 0.0) + float(v) * weight
            acc.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            # 4. logging (means over every process's pairs), evaluation points, checkpoints
            stats = global_means(acc, {k: torch.tensor([v]) for k, v in stats.items()})
            run.log({"step": step, "phase": "policy", **{f"dpo/{k}": v for k, v in stats.items()},
                     "dpo/epoch": epoch, "dpo/lr": optimizer.param_groups[0]["lr"], "dpo/elapsed_s": time.time() - t0})
            if step in points:
                last_eval = evaluate(step)
                last_eval["eval/implicit_reward_accuracy"] = held_accuracy(step)
                policy.train()
            if step % cfg.checkpoint_every == 0 and step < total:
                checkpoint(ctx, update=step, model=policy, optimizer=optimizer)
            advance(1, loss=stats["loss"], margin=stats["rewards/margin"])

    save_policy(ctx, policy, last_eval, update=evaluate.last_update)
    report_final("DPO", last_eval, total)
    return last_eval

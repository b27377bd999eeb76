"""What the policy-optimisation algorithms share: the frozen reference and reward model, seeds per process,
the prompts of each rollout, sampling and scoring completions, the learning-rate schedule, evaluation points
(with a policy snapshot for the audit), resumable checkpoints, the sample table and the final save.

Shapes: B completions in a rollout, P prompt tokens (left padded), R response tokens (right padded after EOS),
T = P + R, V vocab.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from rlhf_lab import trackers
from rlhf_lab.models.heads import ScalarHeadModel
from rlhf_lab.models.lm import save_lm
from rlhf_lab.models.tokenizer import decode_response
from rlhf_lab.runfolder import atomic_dir, write_json, write_jsonl
from rlhf_lab.steps.common import Context
from rlhf_lab.steps.evaluate import evaluate_policy
from rlhf_lab.steps.policy.checkpoint import checkpoint_state, load_checkpoint, save_checkpoint
from rlhf_lab.ui import info
from rlhf_lab.world import hash_seed


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """Evaluation mode, no gradients: π_ref and the reward model never change."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def policy_reference_reward(ctx: Context) -> tuple[torch.nn.Module, torch.nn.Module, ScalarHeadModel]:
    """The policy to train (the SFT model, with fresh LoRA adapters when model.lora), π_ref (frozen; with LoRA
    the same weights with adapters off) and the reward model (frozen), on the device."""
    policy, ref = ctx.policy_and_reference()
    return policy.to(ctx.device), ref, frozen(ctx.reward_model().to(ctx.device))


def reference_and_reward(ctx: Context) -> tuple[torch.nn.Module, ScalarHeadModel]:
    """π_ref (the SFT policy) and the reward model, frozen, on the device (for algorithms that do not train)."""
    return frozen(ctx.sft_lm().to(ctx.device)), frozen(ctx.reward_model().to(ctx.device))


def process_seeds(seed: int, rank: int) -> dict[str, int]:
    """Seeds of one process: its own sampling and shuffling streams (so processes never draw the same samples),
    and an evaluation stream shared by all (every evaluation point sees the same draws)."""
    return {"sample": hash_seed(seed, 41 + rank) % 2**31, "shuffle": hash_seed(seed, 47 + rank) % 2**31,
            "eval": hash_seed(seed, 43) % 2**31}


def shard(items: list, rank: int, world_size: int) -> list:
    """This process's equal share of `items` (the remainder is dropped, so every process does the same work)."""
    per_proc = max(1, len(items) // world_size)
    return items[rank * per_proc: (rank + 1) * per_proc]


def rl_prompts(ctx: Context, update: int, n: int) -> list:
    """The `n` prompts of rollout `update`, this process's share (a pure function of seed and update:
    resume-safe)."""
    prompts = ctx.world.prompts("train", n, seed=hash_seed(ctx.cfg.seed, 1000 + update) % 2**31)
    return shard(prompts, ctx.accelerator.process_index, ctx.accelerator.num_processes)


def annealed_lr(cfg, update: int, total: int) -> float:
    """Learning rate of `update` (1-based): linear from lr to 0 over `total` updates when anneal_lr."""
    return cfg.lr * (1.0 - (update - 1) / total) if cfg.anneal_lr else cfg.lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def minibatch_slices(n: int, cfg, rng: np.random.Generator, group: int = 1,
                     lengths: np.ndarray | None = None) -> list[list[np.ndarray]]:
    """One epoch of a rollout of n sequences: shuffled minibatches (one optimiser step each), each split into
    microbatches of at most `microbatch_size` (one forward/backward each). With `group` > 1 the n sequences come
    in groups of that many siblings (adjacent) and whole groups are shuffled, so that siblings share forwards.

    With `lengths` (n,), the tokens of each sequence, a minibatch is ordered by length before it is split, so
    that each forward pads to the longest of similar sequences: the minibatch, hence its gradient, is the same
    (up to rounding), for less work — on the default run's answers (1 to 40 words) a third less."""
    order = (rng.permutation(n // group)[:, None] * group + np.arange(group)).reshape(-1)  # (n,)
    mb_size = max(1, math.ceil(n / cfg.minibatches))
    out = []
    for start in range(0, n, mb_size):
        mb = order[start: start + mb_size]
        if lengths is not None and cfg.microbatch_size < len(mb):
            longest = np.asarray(lengths)[mb].reshape(-1, group).max(1)  # (groups,): siblings stay together
            mb = mb.reshape(-1, group)[np.argsort(longest, kind="stable")].reshape(-1)
        micro = max(1, min(cfg.microbatch_size, len(mb)))
        out.append([mb[i: i + micro] for i in range(0, len(mb), micro)])
    return out


def global_sum(acc, x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over every process (the tensor itself with one process)."""
    return acc.reduce(x.detach().float().clone(), reduction="sum") if acc.num_processes > 1 else x.detach().float()


def global_masked_moments(acc, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased variance) of the masked entries of `x` over every process's batch, so that whitening
    with N processes of B sequences equals whitening one process's N·B sequences.

    Two passes, each one all-reduce: the global mean first, then the sum of squared deviations from it. The
    one-pass E[x²] − E[x]² loses every digit of the variance in fp32 once |mean| ≫ std."""
    m = mask.to(torch.float32)
    xf = x.detach().float()
    n, s1 = global_sum(acc, torch.stack([m.sum(), (xf * m).sum()]))
    mean = s1 / n.clamp(min=1)
    ss = global_sum(acc, (((xf - mean) * m) ** 2).sum())
    var = ss / (n - 1).clamp(min=1)
    return mean, var


def global_means(acc, values: dict[str, torch.Tensor]) -> dict[str, float]:
    """The mean of every tensor over all processes' entries, in one all-reduce: each process holds its share
    (a (B,) tensor of per-sequence values, or a (1,) per-process statistic), and every process gets the same
    numbers — what the KL controller steers by, the checkpoint saves and the log shows.

    Naive equivalent: torch.cat([share of every process]).mean() for each key."""
    if not values:
        return {}
    keys = list(values)
    # one device for the one reduce (NCCL needs the accelerator's; statistics may come from the CPU)
    flat = [values[k].detach().float().reshape(-1).to(acc.device) for k in keys]
    sums = torch.stack([torch.stack([v.sum(), torch.tensor(float(v.numel()), device=v.device)]) for v in flat])
    sums = global_sum(acc, sums)  # (keys, 2): sum and count over every process
    return {k: float(s / max(float(c), 1.0)) for k, (s, c) in zip(keys, sums, strict=True)}


def eval_points(cfg, total: int) -> set[int]:
    """The updates after which the policy is evaluated (`eval` section; update 0, before any, always is), the
    last among them. schedule=log: 1, g, g², … rounded (1, 2, 4, 8, 16, … at g = 2) — as many points below
    update 8 as above it, so the start of the reward–KL curve, where it bends, is seen; every: each `every`-th."""
    if cfg.schedule == "every":
        return {u for u in range(1, total + 1) if u % cfg.every == 0} | {total}
    points, x = {total}, 1.0
    while x < total:
        points.add(round(x))
        x *= cfg.growth
    return points


def trimmed(query_mask: torch.Tensor, mask: torch.Tensor, idx: torch.Tensor) -> tuple[slice, int, int]:
    """Columns of rows `idx` that are not padding in every row: (sequence slice, prompt length, response length).

    Dropping all-padding columns gives the same result for less work."""
    P = query_mask.shape[1]
    lo = int(query_mask[idx].argmax(1).min())  # first real prompt token in any row
    r_len = max(1, int(mask[idx].sum(1).max()))  # longest response
    return slice(lo, P + r_len), P - lo, r_len


def sequence_lengths(query_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Prompt + response tokens of each sequence of a rollout, the length microbatches and chunks are sorted by.
    query_mask (B, P), mask (B, R) → (B,)."""
    return query_mask.sum(1) + mask.sum(1)


def by_length(query_mask: torch.Tensor, mask: torch.Tensor, size: int) -> list[tuple[torch.Tensor, slice, int, int]]:
    """The rows of a rollout in chunks of at most `size` rows of similar length (prompt + response tokens), each as
    (rows, `trimmed` columns, prompt length, response length): for the forwards that need no gradient, which then
    pad to the longest of similar sequences instead of the longest of all. query_mask (B, P), mask (B, R)."""
    order = torch.argsort(sequence_lengths(query_mask, mask), stable=True)  # (B,)
    chunks = []
    for start in range(0, len(order), size):
        idx = order[start: start + size]
        chunks.append((idx, *trimmed(query_mask, mask, idx)))
    return chunks


def score_completions(rm, ids: torch.Tensor, mask: torch.Tensor, responses: torch.Tensor, *, eos_token_id: int,
                      missing_eos_penalty: float, grouped: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward model's normalised score of each sequence (`rm.score`: a single model, a distributional one's
    risk-adjusted score, or a set's aggregate), minus a fixed penalty where the completion never emitted EOS.
    ids, mask (B, T), responses (B, R) → scores (B,), contain_eos (B,). `grouped`: the same sequences as
    (prompt_ids, prompt_mask, prompt_of, responses, response_mask) for `rm.score_grouped`, which computes each
    distinct prompt once."""
    scores = (rm.score_grouped(*grouped) if grouped is not None else rm.score(ids, mask)).float()  # (B,)
    return eos_penalised(scores, responses, eos_token_id=eos_token_id, missing_eos_penalty=missing_eos_penalty)


def eos_penalised(scores: torch.Tensor, responses: torch.Tensor, *, eos_token_id: int,
                  missing_eos_penalty: float) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B,) minus a fixed penalty where the response (B, R) never emitted EOS → (scores, contain_eos)."""
    contain_eos = (responses == eos_token_id).any(1)
    return torch.where(contain_eos, scores, scores - missing_eos_penalty), contain_eos


class EvalPoints:
    """Evaluation on the held-out prompts (same prompts and sampling seed at every point), logged as `eval/…`;
    at every point after the start the policy is saved to checkpoints/step_NNNNN for the audit, and every point's
    per-prompt records to checkpoints/evals/step_NNNNN.jsonl."""

    def __init__(self, ctx: Context, policy, *, ref, rm):
        self.ctx, self.policy, self.ref, self.rm = ctx, policy, ref, rm
        self.prompts = ctx.world.prompts("eval", ctx.cfg.eval.n_prompts, seed=ctx.cfg.seed)
        self.prompt_ids = ctx.prompt_ids(self.prompts)  # the same at every point: rendered and tokenised once
        self.seed = eval_seed(ctx.cfg.seed)
        self.last_update: int | None = None  # the latest point evaluated: what the final policy's evaluation is

    def __call__(self, update: int) -> dict:
        ctx = self.ctx
        self.last_update = update
        # Update 0 is the SFT policy, π_ref itself: its KL is 0 (measured, it was the same forward run twice)
        summary, records = evaluate_policy(ctx, self.policy, ref=self.ref, rm=self.rm, prompts=self.prompts,
                                            prompt_ids=self.prompt_ids,
                                            generator=torch.Generator().manual_seed(self.seed),
                                            temperature=ctx.cfg.generation.temperature,
                                            max_new_tokens=ctx.cfg.generation.max_new_tokens, with_kl=update > 0)
        ctx.run.log({"step": update, "phase": "policy", **summary})
        if ctx.is_main:  # per-prompt records: the audit's paired interval of each point against update 0 (SFT)
            write_jsonl(ctx.run / "checkpoints" / "evals" / f"step_{update:05d}.jsonl", records)
            trackers.forward_table(ctx.run.root, "eval/samples", [
                {"step": update, "family": r["family"], "user_group": r["user_group"], "prompt": r["prompt"],
                 "completion": r["response"], "proxy": r["proxy"], "gold": r["gold"], "kl": r["kl"]}
                for r in records], step=update, phase="policy")
        if update > 0 and ctx.is_main:
            with atomic_dir(ctx.run / "checkpoints" / f"step_{update:05d}") as tmp:
                save_lm(self.policy, ctx.tokenizer, tmp)
        return summary


def eval_seed(seed: int) -> int:
    """The sampling seed of every evaluation on the held-out prompts — each point of policy optimisation and the
    evaluation step — so the step's two models are the records the first and last points wrote."""
    return process_seeds(seed, 0)["eval"]


def config_fingerprint(ctx: Context) -> str:
    """What a checkpoint must have been written under to be resumed: the whole resolved config."""
    return hashlib.sha256(ctx.cfg.experiment_yaml().encode()).hexdigest()[:16]


def resume(ctx: Context, *, model, optimizer, kl_ctl=None, generator: torch.Generator | None = None,
           np_rng: np.random.Generator | None = None) -> int:
    """Continue from `run/policy_ckpt` if it was written by this run's config: load weights, optimiser, β and
    RNG states; drop metrics logged after the checkpoint (that work is about to be redone). Returns the last
    finished update (0 if none). A checkpoint of another config (the step rerun with other settings) is ignored."""
    folder = ctx.run / "policy_ckpt"
    state = checkpoint_state(folder)
    if state is None:
        return 0
    if state.get("algorithm", "ppo") != ctx.cfg.policy.algorithm or \
            state.get("config", config_fingerprint(ctx)) != config_fingerprint(ctx):
        info(f"[dim]{folder}: written under another config; starting policy optimisation afresh[/dim]")
        return 0
    ckpt = load_checkpoint(folder, model=model, optimizer=optimizer)
    start = ckpt["update"]
    if kl_ctl is not None:
        kl_ctl.value = ckpt["kl_coef"]
    if generator is not None:
        generator.set_state(ckpt["generator"])
    if np_rng is not None:
        np_rng.bit_generator.state = ckpt["np_rng"]
    ctx.run.truncate_metrics(lambda r: r.get("phase") != "policy" or r.get("step", 0) <= start)
    info(f"{ctx.cfg.policy.algorithm.upper()}: resuming from update {start}")
    return start


def checkpoint(ctx: Context, *, update: int, model, optimizer, kl_ctl=None, generator: torch.Generator | None = None,
               np_rng: np.random.Generator | None = None) -> None:
    """A resumable checkpoint in `run/policy_ckpt` (main process only)."""
    if not ctx.is_main:
        return
    gen_state = generator.get_state() if generator is not None else torch.zeros(0, dtype=torch.uint8)
    save_checkpoint(ctx.run / "policy_ckpt", update=update, model=model, optimizer=optimizer,
                    kl_coef=kl_ctl.value if kl_ctl is not None else ctx.cfg.policy.kl_coef, generator=gen_state,
                    np_rng=np_rng.bit_generator.state if np_rng is not None else {},
                    extra={"algorithm": ctx.cfg.policy.algorithm, "config": config_fingerprint(ctx)})


def save_policy(ctx: Context, policy, last_eval: dict, *, update: int | None = None,
                extra_files: dict | None = None) -> None:
    """The trained policy as a Hugging Face model folder in `run/policy`, with its last evaluation (that of
    evaluation point `update`, whose records are checkpoints/evals/step_NNNNN.jsonl)."""
    if not ctx.is_main:
        return
    with atomic_dir(ctx.run / "policy") as tmp:
        save_lm(policy, ctx.tokenizer, tmp)
        write_json(tmp / "final_eval.json", {**last_eval, "update": update})
        for name, obj in (extra_files or {}).items():
            write_json(tmp / name, obj)


def report_final(name: str, last_eval: dict, steps: int | None = None) -> None:
    done = f" {steps} updates;" if steps is not None else ""
    info(f"{name}:{done} held-out proxy reward {last_eval.get('eval/proxy_reward', float('nan')):+.2f}, "
         f"gold utility {last_eval.get('eval/gold_utility', float('nan')):+.2f}, KL {last_eval.get('eval/kl', 0):.2f}")


def log_sample_table(ctx: Context, update: int, prompts, responses: torch.Tensor, scores: torch.Tensor,
                     kl: torch.Tensor, n: int = 8) -> None:
    """A few (prompt, response, score, KL) rows, appended to samples_table.jsonl. kl: (B,) per sequence."""
    rows = [{"step": update, "prompt": ctx.prompt_text(p), "response": decode_response(ctx.tokenizer, r.tolist()),
             "score": float(s), "kl": float(k)}
            for p, r, s, k in list(zip(prompts, responses, scores, kl, strict=True))[:n]]
    if not ctx.is_main:
        return
    with open(ctx.run / "samples_table.jsonl", "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))

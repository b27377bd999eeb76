"""Step 3 — a reward model learns to predict the preferences (Bradley–Terry), then its scores are
normalised to mean 0 / std 1 on samples of the SFT policy (so a KL coefficient means the same thing from
run to run; Ziegler et al. 2019, §2.2)."""

from __future__ import annotations

import math
import zlib
from collections import defaultdict

import numpy as np
import torch

from rlhf_lab.data import read_preferences
from rlhf_lab.models.generation import generate, left_pad
from rlhf_lab.models.heads import ScalarHeadModel, last_index
from rlhf_lab.models.lm import position_ids_from_mask
from rlhf_lab.models.tokenizer import encode_response
from rlhf_lab.runfolder import atomic_dir, write_json, write_jsonl
from rlhf_lab.steps.common import Context, adamw, linear_schedule, pair_batches, score, seed_everything, shard
from rlhf_lab.steps.losses import bradley_terry_nll, probit_preference_nll
from rlhf_lab.ui import info, progress
from rlhf_lab.world import Prompt


def split_rows(rows: list[dict], eval_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Held-out split by prompt (all pairs of a prompt on one side), stable under the seed."""
    train, held = [], []
    for r in rows:
        key = str(r.get("prompt_id") or r.get("pair_id") or r["prompt"])
        h = zlib.crc32(f"{seed}:{key}".encode()) / 2**32
        (held if h < eval_share else train).append(r)
    if not train or not held:  # tiny data: fall back to a plain split
        cut = max(1, int(len(rows) * (1 - eval_share)))
        train, held = rows[:cut], rows[cut:] or rows[-1:]
    return train, held


def preference_ids(tok, row: dict) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) token ids of a preference row. The ids it was sampled as when the row
    carries them (pairs from `sample`); otherwise its text encoded once, the one way used for every text-only
    row: the prompt as is, without special tokens, and each response by `encode_response` (a leading space,
    then EOS: the stop the policy must learn)."""
    ids = row.get("prompt_ids"), row.get("chosen_ids"), row.get("rejected_ids")
    if all(x is not None for x in ids):
        return tuple(list(x) for x in ids)
    return (tok(row["prompt"], add_special_tokens=False)["input_ids"], encode_response(tok, row["chosen"]),
            encode_response(tok, row["rejected"]))


def tokenize_pairs(ctx: Context, rows: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(prompt + chosen, prompt + rejected) ids per row, as `preference_ids` gives them."""
    tok, vocab = ctx.tokenizer, len(ctx.tokenizer)
    out = []
    for n, r in enumerate(rows, 1):
        p, c, j = preference_ids(tok, r)
        if any(i >= vocab for i in (*p, *c, *j)):
            raise ValueError(f"preferences row {n} (pair {r.get('pair_id')}): token ids beyond the tokenizer's "
                             f"{vocab} — sampled with another tokenizer?")
        out.append((p + c, p + j))
    return out


def pair_outputs(rm, pairs: list[tuple[list[int], list[int]]], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Raw head outputs at the last token for chosen and rejected, in one forward. → (B, n), (B, n).

    `rm` may be wrapped for DDP: the call goes through its forward so gradients are synchronised."""
    batch = left_pad([c for c, _ in pairs] + [r for _, r in pairs], pad_id, device)  # (2B, T)
    out = rm(batch.input_ids, batch.attention_mask, all_outputs=True)  # (2B, T, n)
    s = out[torch.arange(out.shape[0], device=out.device), last_index(batch.attention_mask)]  # (2B, n)
    return s[: len(pairs)], s[len(pairs):]


def pair_scores(rm, pairs: list[tuple[list[int], list[int]]], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Raw chosen and rejected scores (μ for a distributional model). → (B,), (B,)."""
    c, r = pair_outputs(rm, pairs, pad_id, device)
    return c[:, 0], r[:, 0]


# Per-pair loss from the head outputs of chosen and rejected, (B, n) each, chosen by the kind of head: a scalar
# head's Bradley–Terry loss, a distributional head's probit loss on (μ, σ) (Siththaranjan et al. 2023).
PREFERENCE_LOSSES = {
    False: lambda c, r: bradley_terry_nll(c[:, 0], r[:, 0]),
    True: lambda c, r: probit_preference_nll(c[:, 0], c[:, 1], r[:, 0], r[:, 1]),
}


@torch.no_grad()
def accuracy(rm: ScalarHeadModel, pairs, pad_id: int, device, batch_size: int = 256) -> np.ndarray:
    """1.0 where the reward model ranks chosen above rejected, per pair (0.5 for an exact tie)."""
    rm.eval()
    out = []
    for i in range(0, len(pairs), batch_size):
        c, r = pair_scores(rm, pairs[i: i + batch_size], pad_id, device)
        out.append(((c > r).float() + 0.5 * (c == r).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def train_reward_model(ctx: Context, train, held, *, seed: int, label: str = "Reward model",
                       weights: np.ndarray | None = None, distributional: bool = False) -> tuple:
    """Train one reward model (Bradley–Terry, or the probit mean–variance loss when `distributional`).

    `weights` (one per training pair) weigh each pair's loss (EM responsibilities). Returns (model,
    held-out accuracy per pair)."""
    cfg, acc = ctx.cfg.reward, ctx.accelerator
    seed_everything(seed)
    init = ctx.sft_lm() if cfg.init == "sft" else ctx.base_lm()
    rm = ScalarHeadModel.from_lm(init, distributional=distributional)
    preference_nll = PREFERENCE_LOSSES[distributional]
    del init
    if cfg.train == "head_on_frozen":
        return train_head_on_frozen(ctx, rm.to(ctx.device), train, held, seed=seed, label=label, weights=weights)
    if ctx.cfg.model.lora:
        from rlhf_lab.models.lora import add_lora

        rm.backbone = add_lora(rm.backbone, ctx.cfg.model)
    params = [p for p in rm.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = math.ceil(len(train) / cfg.batch_size) * cfg.epochs
    scheduler = linear_schedule(optimizer, total, warmup=max(1, total // 20))
    rm, optimizer = acc.prepare(rm, optimizer)
    pad = ctx.tokenizer.pad_token_id
    rng = np.random.default_rng(seed)
    lengths = [max(len(c), len(r)) for c, r in train]
    step = 0
    with progress(label, total) as advance:
        for _epoch in range(cfg.epochs):
            rm.train()
            for idx in pair_batches(len(train), cfg.batch_size, rng, lengths):
                # this process's pairs; mean over the global batch whatever the number of processes
                part, real = shard(idx, acc)
                c, r = pair_outputs(rm, [train[i] for i in part], pad, acc.device)
                w = torch.ones(len(part)) if weights is None else torch.as_tensor(weights[part], dtype=torch.float)
                total_w = float(len(idx) if weights is None else weights[idx].sum()) or 1.0
                loss = (w.to(c.device) * preference_nll(c, r)).sum() * (acc.num_processes * real / total_w)
                acc.backward(loss)
                acc.clip_grad_norm_(params, 1.0)
                step = _step(ctx, optimizer, scheduler, advance, step=step, total=total, loss=loss, c=c, r=r)
    rm = acc.unwrap_model(rm)
    if ctx.cfg.model.lora:
        rm.backbone = rm.backbone.merge_and_unload()
    return rm, accuracy(rm, held, pad, acc.device)


def _step(ctx: Context, optimizer, scheduler, advance, *, step: int, total: int, loss, c, r) -> int:
    """After the backward: one optimiser step, its progress, and its log every 20 steps and at the last (the
    loss and the mean margin of the batch's chosen over rejected scores c, r: (b, n)). → the new step count."""
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    step += 1
    advance(1, loss=loss.item())
    if step % 20 == 0 or step == total:
        ctx.run.log({"step": step, "phase": "reward", "reward/loss": loss.item(),
                     "reward/margin": (c[:, 0] - r[:, 0]).mean().item()})
    return step


@torch.no_grad()
def frozen_features(backbone, seqs: list[list[int]], *, pad_id: int, device, batch_size: int = 32,
                    label: str = "Features") -> torch.Tensor:
    """The backbone's hidden state at the last token of each sequence, (S, H): exactly what the head of a
    `ScalarHeadModel` reads in `score`. Sequences go in batches of neighbours in length (little padding)."""
    backbone.eval()
    out = torch.empty(len(seqs), backbone.config.hidden_size)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    with progress(label, len(seqs)) as advance:
        for b in range(0, len(order), batch_size):
            idx = order[b: b + batch_size]
            batch = left_pad([seqs[i] for i in idx], pad_id, device)  # (b, T), left padded: the last column is real
            hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              position_ids=position_ids_from_mask(batch.attention_mask)).last_hidden_state  # (b, T, H)
            out[idx] = hidden[:, -1].float().cpu()
            advance(len(idx))
    return out


def train_head_on_frozen(ctx: Context, rm: ScalarHeadModel, train, held, *, seed: int, label: str,
                         weights: np.ndarray | None) -> tuple:
    """`reward.train: head_on_frozen` — the head alone learns, over features of the frozen backbone computed
    once per distinct sequence (pairs of one prompt share sequences). A linear probe with the Bradley–Terry
    (or probit) loss: one forward per sequence instead of `epochs` forwards and backwards per pair, so a CPU
    affords many more pairs. Every process computes the same features and trains the same head (no DDP).
    Returns (model, held-out accuracy per pair), as `train_reward_model`."""
    cfg = ctx.cfg.reward
    for p in rm.backbone.parameters():
        p.requires_grad_(False)
    seqs, index = [], {}  # distinct sequences, and where each one is
    for pair in (*train, *held):
        for ids in pair:
            if tuple(ids) not in index:
                index[tuple(ids)] = len(seqs)
                seqs.append(ids)
    feats = frozen_features(rm.backbone, seqs, pad_id=ctx.tokenizer.pad_token_id, device=ctx.device,
                            label=f"{label}: features").to(ctx.device)  # (S, H)
    pairs = torch.tensor([[index[tuple(c)], index[tuple(r)]] for c, r in (*train, *held)])  # (N, 2)
    tr, he = pairs[: len(train)], pairs[len(train):]
    w_all = torch.ones(len(train)) if weights is None else torch.as_tensor(weights, dtype=torch.float)
    preference_nll = PREFERENCE_LOSSES[rm.distributional]
    optimizer = adamw(rm.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = math.ceil(len(train) / cfg.batch_size) * cfg.epochs
    scheduler = linear_schedule(optimizer, total, warmup=max(1, total // 20))
    rng = np.random.default_rng(seed)
    step = 0
    with progress(f"{label}: head", total) as advance:
        for _epoch in range(cfg.epochs):
            for idx in pair_batches(len(train), cfg.batch_size, rng):
                c, r = rm._head(feats[tr[idx, 0]]), rm._head(feats[tr[idx, 1]])  # (b, n) each
                w = w_all[idx].to(c.device)
                loss = (w * preference_nll(c, r)).sum() / (float(w.sum()) or 1.0)
                loss.backward()
                step = _step(ctx, optimizer, scheduler, advance, step=step, total=total, loss=loss, c=c, r=r)
    with torch.no_grad():
        c, r = rm._head(feats[he[:, 0]])[:, 0], rm._head(feats[he[:, 1]])[:, 0]  # (held,) μ, as `accuracy`
    return rm, ((c > r).float() + 0.5 * (c == r).float()).cpu().numpy()


def norm_prompts(ctx: Context) -> list[Prompt]:
    """The world's held-out prompts whose SFT samples fix the scale of a score (`norm_samples`)."""
    return ctx.world.prompts("norm", ctx.cfg.reward.n_norm_samples, seed=ctx.cfg.seed)


def norm_samples(ctx: Context, *, prompt_ids: list[list[int]] | None = None
                 ) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, response ids): SFT samples of held-out prompts, drawn once for every member's normalisation
    (of `prompt_ids` when given: the world's `norm_prompts` even where the labels were imported)."""
    n = ctx.cfg.reward.n_norm_samples
    gen = seed_everything(ctx.cfg.seed + 7)
    policy = ctx.sft_lm().to(ctx.device)
    tok = ctx.tokenizer
    if prompt_ids is not None:
        p_ids = prompt_ids
    elif ctx.cfg.model.path and ctx.cfg.label.source == "import":
        rows = read_preferences(ctx.run / "preferences.parquet")
        p_ids = [preference_ids(tok, r)[0] for r in rows[:n]]
    else:
        p_ids = ctx.prompt_ids(norm_prompts(ctx))
    resp = generate(policy, p_ids, max_new_tokens=ctx.cfg.generation.max_new_tokens,
                    temperature=ctx.cfg.generation.temperature,
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, generator=gen,
                    backend=ctx.cfg.model.generation_backend, cuda_graph=ctx.cfg.model.cuda_graphs)
    return p_ids, resp


def fit_normalisation(rm: ScalarHeadModel, samples: tuple[list[list[int]], list[list[int]]], *,
                      pad_id: int) -> tuple[float, float]:
    """gain, bias so that gain·raw + bias has mean 0 and std 1 on `samples` (`norm_samples`)."""
    return unit_scale(score(rm, *samples, pad_id=pad_id, normalized=False))


def unit_scale(raw) -> tuple[float, float]:
    """gain, bias that give `raw` (scores of the norm samples) mean 0 and std 1."""
    mean, std = float(raw.mean()), float(raw.std() + 1e-6)
    return 1.0 / std, -mean / std


def scipy_norm_ppf(q: float) -> float:
    """Φ⁻¹(q), the standard normal quantile."""
    from scipy.stats import norm

    return float(norm.ppf(q))


def run_reward(ctx: Context) -> dict:
    cfg = ctx.cfg.reward
    rows = read_preferences(ctx.run / "preferences.parquet")
    if len(rows) < 4:
        hint = ""
        if ctx.cfg.label.source == "simulated":
            hint = (" — most labels were ties, which happens when the SFT model writes text the annotators cannot "
                    "tell apart (train SFT longer: sft.n_demos / sft.epochs)")
        raise ValueError(f"{ctx.run / 'preferences.parquet'}: only {len(rows)} preferences; need at least 4{hint}")
    train_rows, held_rows = split_rows(rows, cfg.eval_share, ctx.cfg.seed)
    train, held = tokenize_pairs(ctx, train_rows), tokenize_pairs(ctx, held_rows)
    if cfg.models == "single" or cfg.models == "distributional":
        rm, correct = train_reward_model(ctx, train, held, seed=ctx.cfg.seed,
                                         distributional=cfg.models == "distributional")
        if cfg.models == "distributional":
            rm.risk_z.fill_(float(scipy_norm_ppf(cfg.risk_quantile)))
        member_stats: dict = {}
    else:
        from rlhf_lab.steps.reward_sets import train_reward_set

        rm, correct, member_stats = train_reward_set(ctx, train_rows, held_rows, train, held)
    samples = norm_samples(ctx)
    norms = [fit_normalisation(m, samples, pad_id=ctx.tokenizer.pad_token_id) for m in rm.members]  # (gain, bias)
    for m, (gain, bias) in zip(rm.members, norms, strict=True):
        m.gain.fill_(gain)
        m.bias.fill_(bias)
    if len(rm.members) > 1:  # the set's accuracy is that of the aggregate, after normalisation
        pad, none = ctx.tokenizer.pad_token_id, [[] for _ in held]
        c, r = (score(rm, [pair[side] for pair in held], none, pad_id=pad) for side in (0, 1))
        correct = (c > r) + 0.5 * (c == r)

    by_group: dict[str, list[float]] = defaultdict(list)
    by_family: dict[str, list[float]] = defaultdict(list)
    eval_rows = []
    for r, ok in zip(held_rows, correct, strict=True):
        by_group[str(r.get("annotator_group"))].append(float(ok))
        by_family[str(r.get("family"))].append(float(ok))
        eval_rows.append({"pair_id": r.get("pair_id"), "annotator_group": r.get("annotator_group"),
                          "family": r.get("family"), "correct": float(ok)})
    stats = {"reward/accuracy": float(correct.mean()), "reward/n_train": len(train), "reward/n_eval": len(held),
             "reward/models": cfg.models, **member_stats}
    if len(norms) == 1:
        stats.update({"reward/gain": norms[0][0], "reward/bias": norms[0][1]})
    else:  # a set's normalisation is each member's own, not one number
        stats.update({f"reward/{key}/member/{k}": v for k, (g, b) in enumerate(norms)
                      for key, v in (("gain", g), ("bias", b))})
    stats.update({f"reward/accuracy/group/{g}": float(np.mean(v)) for g, v in by_group.items()})
    stats.update({f"reward/accuracy/family/{f}": float(np.mean(v)) for f, v in by_family.items()})
    ctx.run.log({"phase": "reward", **stats})
    if ctx.is_main:
        with atomic_dir(ctx.run / "reward") as tmp:
            rm.save(tmp)
            write_json(tmp / "metrics.json", stats)
            write_jsonl(tmp / "eval.jsonl", eval_rows)
    info(f"Reward model: held-out accuracy {stats['reward/accuracy']:.3f} on {len(held)} pairs "
         f"(trained on {len(train)})")
    return stats

"""What a reward model on SmolLM2 can learn from a run folder's labels, before paying for a whole run.

Reads RUN's preferences (split by prompt as the reward step splits them) and its SFT model (RUN/sft; --model
for another folder), then measures, on the held-out pairs:

  1. the labels' own ceiling: how often the label agrees with the sign of the annotator population's expected
     preference (the best any reward model can do against these labels), per prompt family;
  2. a linear Bradley–Terry probe (logistic regression on feature differences, standardised, no intercept, one
     row per pair and its mirror) on the hidden state at the last token, at every --layers layer: what
     `reward.train: head_on_frozen` can reach, over a grid of C (--pooling: the same probe on the hidden states
     pooled over the response's tokens or the whole sequence instead, a head that reads more than one token);
  3. a learning curve of the final-layer probe over a quarter, half, three quarters and all training pairs;
  4. with --top-layers K: the top K decoder layers, the final norm and a head fine-tuned with the
     Bradley–Terry loss over activations of the bottom layers computed once (K = all layers: full fine-tuning).

    python benchmarks/smollm2_reward_probe.py RUN [--preferences FILE] [--pooling mean-response]
                                                  [--top-layers 6 --lr 1e-4 --epochs 3]

Features are cached in RUN/probe-features[-POOLING].pt by sequence, so a relabelled copy of the preferences
(--preferences) reuses them. Prints one line per measurement; nothing else is written.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlhf_lab.config import load_config
from rlhf_lab.data import read_preferences
from rlhf_lab.models.generation import left_pad
from rlhf_lab.models.heads import ScalarHeadModel
from rlhf_lab.models.lm import load_lm, position_ids_from_mask
from rlhf_lab.steps.reward import preference_ids, split_rows
from rlhf_lab.world import World, hash_seed
from rlhf_lab.world.annotators import build_population, p_verify, utility
from rlhf_lab.world.prompts import Prompt

C_GRID = (0.001, 0.003, 0.01, 0.03)
POOLINGS = ("last", "mean-response", "max-response", "mean-sequence")


def expected_preference(world: World, population, row: dict) -> tuple[float, str]:
    """P(chosen ≻ rejected) averaged over the annotators and their chances to verify and to spot harm."""
    prompt = Prompt.from_dict(json.loads(row["meta"]))
    fa, fb = world.parse(row["chosen"], prompt), world.parse(row["rejected"], prompt)
    total = 0.0
    for ann in population:
        pv = p_verify(ann.p_know, prompt.difficulty)
        ps = ann.p_spot_jailbreak if prompt.wrapped else ann.p_spot_harm
        for verify, wv in ((True, pv), (False, 1 - pv)):
            for spot, ws in ((True, ps), (False, 1 - ps)):
                gap = (utility(ann, prompt, fa, verify=verify, spot=spot)
                       - utility(ann, prompt, fb, verify=verify, spot=spot))
                total += wv * ws / (1 + math.exp(-gap / ann.tau))
    return total / len(population), prompt.family


def length_batches(seqs: list[list[int]], pad_id: int, size: int = 32):
    """(indices, forward kwargs) for batches of neighbours in length, left padded, positions skipping the pad."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for b in range(0, len(order), size):
        idx = order[b: b + size]
        batch = left_pad([seqs[i] for i in idx], pad_id)
        yield idx, dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=position_ids_from_mask(batch.attention_mask))


@torch.no_grad()
def pooled_states(backbone, seqs: list[list[int]], prompt_lens: list[int], pad_id: int, *,
                  pooling: str = "last") -> torch.Tensor:
    """(S, L+1, H): each sequence's hidden states after the embeddings and every layer, read at its last token
    ("last": what a ScalarHeadModel's head reads) or pooled over its response's tokens (mean or max) or over all
    of its tokens (mean). Batches are left padded, so a sequence of n tokens is the last n positions."""
    out = None
    for idx, inputs in length_batches(seqs, pad_id):
        hs = torch.stack(backbone(**inputs, output_hidden_states=True).hidden_states, 1)  # (b, L+1, T, H)
        T = hs.shape[2]
        rows = []
        for j, i in enumerate(idx):
            first = T - len(seqs[i]) if pooling == "mean-sequence" else T - len(seqs[i]) + prompt_lens[i]
            span = hs[j, :, first:]  # (L+1, n, H)
            rows.append(span[:, -1] if pooling == "last" else span.max(1).values if pooling == "max-response"
                        else span.mean(1))
        if out is None:
            out = torch.zeros(len(seqs), *rows[0].shape)
        out[idx] = torch.stack(rows)
    return out


def probe_margins(train: np.ndarray, held: np.ndarray, c: float, *,
                  train_subset: np.ndarray | None = None) -> np.ndarray:
    """Held-out margins of a logistic Bradley–Terry probe on feature differences (chosen − rejected): > 0 means
    it ranks the chosen response first."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    a = train if train_subset is None else train[train_subset]
    x, y = np.vstack([a, -a]), np.r_[np.ones(len(a)), np.zeros(len(a))]
    scale = StandardScaler(with_mean=False).fit(x)
    model = LogisticRegression(C=c, max_iter=3000, fit_intercept=False).fit(scale.transform(x), y)
    return model.decision_function(scale.transform(held))


def accuracy(margins: np.ndarray) -> np.ndarray:
    """Per pair: 1 ranked right, ½ a tie (as the reward step counts it), 0 wrong."""
    return (margins > 0) + 0.5 * (margins == 0)


def probe(train: np.ndarray, held: np.ndarray, c: float, *, train_subset: np.ndarray | None = None) -> float:
    """Held-out accuracy of `probe_margins`' probe."""
    return float(accuracy(probe_margins(train, held, c, train_subset=train_subset)).mean())


def fine_tune_top(rm: ScalarHeadModel, seqs, pairs_train, pairs_held, *, top: int, lr: float, epochs: int,
                  batch_size: int, pad_id: int) -> None:
    """Fine-tune the top `top` layers, the final norm and the head over cached activations of the rest."""
    bb = rm.backbone
    layers, norm = bb.layers, bb.norm
    bottom = len(layers) - top
    cached: list[torch.Tensor] = [None] * len(seqs)  # type: ignore[list-item]
    with torch.no_grad():  # the bottom layers' output, before the final norm: what layer `bottom` reads
        bb.layers, bb.norm = layers[:bottom], torch.nn.Identity()
        for idx, inputs in length_batches(seqs, pad_id):
            h = bb(**inputs).last_hidden_state
            for k, i in enumerate(idx):
                cached[i] = h[k, h.shape[1] - len(seqs[i]):].clone()
        bb.layers, bb.norm = layers, norm

    def scores(idx) -> torch.Tensor:
        width = max(cached[i].shape[0] for i in idx)
        x = torch.zeros(len(idx), width, cached[0].shape[1])
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for k, i in enumerate(idx):
            x[k, width - cached[i].shape[0]:], mask[k, width - cached[i].shape[0]:] = cached[i], 1
        bb.layers = layers[bottom:]
        try:
            h = bb(inputs_embeds=x, attention_mask=mask, position_ids=position_ids_from_mask(mask)).last_hidden_state
        finally:
            bb.layers = layers
        return rm._head(h[:, -1])[:, 0]

    with torch.no_grad():  # the split forward must be the model's own score, or what is trained is another model
        batch = left_pad(seqs[:4], pad_id)
        gap = (rm.score(batch.input_ids, batch.attention_mask, normalized=False).flatten() - scores(range(4))).abs()
        if gap.max() > 1e-3:
            raise SystemExit(f"the split forward differs from the model's score by {gap.max():.3g}: this "
                             "architecture cannot run its top layers from cached activations this way")
    for p in rm.parameters():
        p.requires_grad_(False)
    params = [*layers[bottom:].parameters(), *norm.parameters(), *rm.head.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = epochs * math.ceil(len(pairs_train) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * max(0.0, 1 - s / steps))
    rng = np.random.default_rng(0)

    @torch.no_grad()
    def accuracy(pairs) -> float:
        hits = []
        for b in range(0, len(pairs), 64):
            q = pairs[b: b + 64]
            s = scores([*q[:, 0], *q[:, 1]])
            c, r = s[: len(q)], s[len(q):]
            hits += ((c > r).float() + 0.5 * (c == r).float()).tolist()
        return float(np.mean(hits))

    t0 = time.time()
    for epoch in range(epochs):
        losses = []
        perm = rng.permutation(len(pairs_train))
        for b in range(0, len(perm), batch_size):
            q = pairs_train[perm[b: b + batch_size]]
            s = scores([*q[:, 0], *q[:, 1]])
            loss = -F.logsigmoid(s[: len(q)] - s[len(q):]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
        print(f"top {top} layers, epoch {epoch + 1}: loss {np.mean(losses):.3f}, held-out {accuracy(pairs_held):.3f}"
              f" (n={len(pairs_held)}), training {accuracy(pairs_train):.3f} ({time.time() - t0:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--preferences", type=Path, help="default RUN/preferences.parquet")
    ap.add_argument("--model", type=Path, help="the backbone to read (default RUN/sft)")
    ap.add_argument("--layers", default="0,3,6,9,12,15,18,21,24,27,30")
    ap.add_argument("--pooling", choices=POOLINGS, default="last",
                    help="which tokens' hidden states the probes read (default: the last token, as the head does)")
    ap.add_argument("--top-layers", type=int, default=0, help="also fine-tune the top K layers (0: skip)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(args.run / "config.yaml")
    rows = read_preferences(args.preferences or args.run / "preferences.parquet")
    train_rows, held_rows = split_rows(rows, cfg.reward.eval_share, cfg.seed)
    lm, tok = load_lm(args.model or args.run / "sft")
    lm.eval()

    seqs, prompt_lens, where = [], [], {}
    def index(prompt: list[int], response: list[int]) -> int:
        ids = prompt + response
        if tuple(ids) not in where:
            where[tuple(ids)] = len(seqs)
            seqs.append(ids)
            prompt_lens.append(len(prompt))
        return where[tuple(ids)]
    pairs = np.array([[index(p, c), index(p, r)] for p, c, r in (preference_ids(tok, x) for x in
                                                               (*train_rows, *held_rows))])
    p_train, p_held = pairs[: len(train_rows)], pairs[len(train_rows):]
    print(f"{len(rows)} preferences: {len(train_rows)} training, {len(held_rows)} held out; {len(seqs)} sequences")

    world = World(cfg.world, language="english")
    population = build_population(groups=cfg.annotator_groups(), n_annotators=cfg.label.n_annotators, bias=cfg.label,
                                  seed=hash_seed(cfg.seed, 2))
    expected = [expected_preference(world, population, r) for r in held_rows]
    agree = np.array([e > 0.5 for e, _ in expected])
    print(f"labels' ceiling (label agrees with the sign of the expected preference): {agree.mean():.3f}")

    cache = args.run / ("probe-features.pt" if args.pooling == "last" else f"probe-features-{args.pooling}.pt")
    known = torch.load(cache, weights_only=True) if cache.exists() else {}
    missing = [i for i, s in enumerate(seqs) if " ".join(map(str, s)) not in known]
    if missing:
        t0 = time.time()
        states = pooled_states(lm.model, [seqs[i] for i in missing], [prompt_lens[i] for i in missing],
                               tok.pad_token_id, pooling=args.pooling)
        known.update({" ".join(map(str, seqs[i])): states[k] for k, i in enumerate(missing)})
        torch.save(known, cache)
        print(f"features of {len(missing)} sequences: {time.time() - t0:.0f} s")
    states = torch.stack([known[" ".join(map(str, s))] for s in seqs]).numpy()  # (S, L+1, H)

    def diffs(layer: int) -> tuple[np.ndarray, np.ndarray]:
        d = states[pairs[:, 0], layer] - states[pairs[:, 1], layer]
        return d[: len(train_rows)], d[len(train_rows):]

    for layer in (int(x) for x in args.layers.split(",")):
        if layer < states.shape[1]:
            tr, he = diffs(layer)
            print(f"probe, layer {layer}: " + " ".join(f"C={c} {probe(tr, he, c):.3f}" for c in C_GRID))
    tr, he = diffs(states.shape[1] - 1)
    rng = np.random.default_rng(0)
    for share in (0.25, 0.5, 0.75):
        accs = [probe(tr, he, 0.003, train_subset=rng.permutation(len(tr))[: int(share * len(tr))])
                for _ in range(5)]
        print(f"learning curve, final layer, C=0.003: {int(share * len(tr))} training pairs {np.mean(accs):.3f}"
              " (mean of 5 draws)")
    right = accuracy(probe_margins(tr, he, 0.003))  # all training pairs; per family below
    print(f"learning curve, final layer, C=0.003: {len(tr)} training pairs {right.mean():.3f}")

    by = collections.defaultdict(list)
    for (_, fam), row, ok, ceil in zip(expected, held_rows, right, agree, strict=True):
        fact = json.loads(row["meta"]).get("fact") or {}
        by[(fam, fact.get("kind", "-") if isinstance(fact, dict) else "-")].append((ceil, ok))
    for (fam, kind), v in sorted(by.items()):
        print(f"  {fam:9s} {kind:8s} n={len(v):3d}  ceiling {np.mean([c for c, _ in v]):.2f}  "
              f"probe {np.mean([o for _, o in v]):.2f}")

    if args.top_layers:
        rm = ScalarHeadModel.from_lm(lm)
        fine_tune_top(rm, seqs, p_train, p_held, top=args.top_layers, lr=args.lr, epochs=args.epochs,
                      batch_size=args.batch_size, pad_id=tok.pad_token_id)


if __name__ == "__main__":
    main()

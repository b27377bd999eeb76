"""Step 3 with several reward models: conservative ensembles and per-group models.

- `ensemble` (Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization"): K models from
  different seeds and data orders, each on a bootstrap resample of the pairs when
  `reward.ensemble_bootstrap`; the policy optimises mean, worst case, or mean − λ·std.
- `per_group` (Chakraborty et al. 2024, "MaxMin-RLHF"): one model per annotator group, with groups either
  known (the annotators' groups: simulated, or self-described in the web app) or learned by EM over a
  mixture of reward models when they are not; the policy optimises the minimum over groups (MaxMin) or a
  share-weighted mean.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import torch

from rlhf_lab.models.reward_set import RewardSet
from rlhf_lab.steps.common import Context
from rlhf_lab.steps.reward import pair_scores, train_reward_model
from rlhf_lab.ui import info
from rlhf_lab.world import hash_seed


def train_reward_set(ctx: Context, train_rows, held_rows, train, held) -> tuple[RewardSet, np.ndarray, dict]:
    """Train the configured set. Returns (set, held-out accuracy per pair of member 0, member stats)."""
    cfg = ctx.cfg.reward
    if cfg.models == "ensemble":
        return _ensemble(ctx, train, held)
    if cfg.group_source == "known":
        return _per_group_known(ctx, train_rows, held_rows, train, held)
    return _per_group_em(ctx, train_rows, train, held)


def _ensemble(ctx: Context, train, held):
    cfg = ctx.cfg.reward
    members, accs = [], []
    for k in range(cfg.ensemble_size):
        seed = hash_seed(ctx.cfg.seed, 500 + k) % 2**31
        weights = None
        if cfg.ensemble_bootstrap:  # bagging: each member sees a resample of the pairs (counts as weights)
            draws = np.random.default_rng(seed).integers(0, len(train), len(train))
            weights = np.bincount(draws, minlength=len(train)).astype(float)
        rm, acc = train_reward_model(ctx, train, held, seed=seed, weights=weights,
                                     label=f"Reward model {k + 1}/{cfg.ensemble_size}")
        members.append(rm)
        accs.append(acc)
    agg = {"mean": "mean", "worst_case": "min", "uncertainty": "uncertainty"}[cfg.ensemble_aggregate]
    rs = RewardSet(members, aggregate=agg, names=[f"member{k}" for k in range(len(members))],
                   uncertainty_coef=cfg.uncertainty_coef)
    stats = {f"reward/accuracy/member/{k}": float(a.mean()) for k, a in enumerate(accs)}
    return rs, accs[0], stats


def _objective(cfg) -> str:
    return "min" if cfg.group_objective == "maxmin" else "weighted_mean"


def _per_group_known(ctx: Context, train_rows, held_rows, train, held):
    cfg = ctx.cfg.reward
    groups = sorted({str(r.get("annotator_group")) for r in train_rows if r.get("annotator_group")})
    if len(groups) < 2:
        raise ValueError("reward.models=per_group with reward.group_source=known needs labels from at least two "
                         "annotator groups (annotator_group in the preferences); use group_source=em otherwise")
    members, stats, shares = [], {}, []
    counts = Counter(str(r.get("annotator_group")) for r in train_rows)
    for k, g in enumerate(groups):
        weights = np.array([1.0 if str(r.get("annotator_group")) == g else 0.0 for r in train_rows])
        rm, _ = train_reward_model(ctx, train, held, seed=hash_seed(ctx.cfg.seed, 600 + k) % 2**31, weights=weights,
                                   label=f"Reward model for {g}")
        members.append(rm)
        shares.append(counts[g] / len(train_rows))
        own = [i for i, r in enumerate(held_rows) if str(r.get("annotator_group")) == g]
        if own:
            from rlhf_lab.steps.reward import accuracy

            stats[f"reward/accuracy/own_group/{g}"] = float(accuracy(rm, [held[i] for i in own],
                                                                     ctx.tokenizer.pad_token_id, ctx.device).mean())
    rs = RewardSet(members, aggregate=_objective(cfg), names=groups, weights=shares)
    info(f"Per-group reward models for {', '.join(groups)} (objective: {cfg.group_objective})")
    return rs, np.zeros(len(held)), stats


def _per_group_em(ctx: Context, train_rows, train, held):
    """EM over a mixture of K reward models with annotator-level membership (Chakraborty et al. 2024, §4).

    E-step: r_ak ∝ π_k Π_{pairs of a} σ(r_k(c) − r_k(r)); M-step: each model trained on all pairs weighted
    by its annotators' responsibilities."""
    cfg = ctx.cfg.reward
    K = cfg.em_groups
    annotators = [str(r.get("annotator_id")) for r in train_rows]
    names = sorted(set(annotators))
    index = {a: i for i, a in enumerate(names)}
    rng = np.random.default_rng(ctx.cfg.seed)
    resp = rng.dirichlet(np.ones(K), size=len(names))  # (A, K) responsibilities
    pad = ctx.tokenizer.pad_token_id
    members = []
    for it in range(cfg.em_iterations):
        members = []
        loglik = np.zeros((len(names), K))
        for k in range(K):
            weights = np.array([resp[index[a], k] for a in annotators])
            rm, _ = train_reward_model(ctx, train, held, seed=hash_seed(ctx.cfg.seed, 700 + 10 * it + k) % 2**31,
                                       weights=weights, label=f"EM {it + 1}/{cfg.em_iterations} model {k + 1}/{K}")
            members.append(rm)
            with torch.no_grad():
                rm.eval()
                for start in range(0, len(train), 256):
                    c, r = pair_scores(rm, train[start: start + 256], pad, ctx.device)
                    ll = torch.nn.functional.logsigmoid(c - r).cpu().numpy()
                    for j, v in enumerate(ll):
                        loglik[index[annotators[start + j]], k] += v
        prior = resp.mean(0)
        logits = loglik + np.log(prior + 1e-9)
        resp = np.exp(logits - logits.max(1, keepdims=True))
        resp /= resp.sum(1, keepdims=True)
    hard = resp.argmax(1)
    stats = {"reward/em/cluster_sizes": [int((hard == k).sum()) for k in range(K)]}
    # How well the learned clusters recover the true groups, when the labels say (simulated annotators)
    true = {str(r.get("annotator_id")): r.get("annotator_group") for r in train_rows}
    if all(true.values()):
        by_cluster: dict[int, Counter] = defaultdict(Counter)
        for a, i in index.items():
            by_cluster[int(hard[i])][true[a]] += 1
        purity = sum(c.most_common(1)[0][1] for c in by_cluster.values()) / len(names)
        stats["reward/em/purity"] = purity
    shares = [float(resp[:, k].mean()) for k in range(K)]
    rs = RewardSet(members, aggregate=_objective(cfg), names=[f"cluster{k}" for k in range(K)], weights=shares)
    return rs, np.zeros(len(held)), stats

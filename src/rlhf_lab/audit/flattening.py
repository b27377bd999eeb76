"""Flattening of diverse preferences into one reward, after Siththaranjan et al. 2023, "Distributional
Preference Learning" (arXiv:2312.08358) and Chakraborty et al. 2024, "MaxMin-RLHF" (arXiv:2402.08925).

People disagree (here: one group likes detailed answers, another concise ones), but one reward model is
fit to all their labels, and the policy cannot see who is asking. So:
- reward-model accuracy on each annotator group's held-out labels: the majority is fit better;
- the policy's gold utility for each group of users (every response judged as if each group had asked:
  the policy's answer does not depend on who asks), and the gap between the best- and worst-served group;
- on constructed pairs (a detailed and a concise answer, both correct) how often the reward model takes
  the detailed side: whose taste the single reward encodes;
- annotator agreement per prompt family (Krippendorff's α, and the share of agreeing label pairs): with
  one label per pair the simulated population (same config and seed) relabels pairs several
  times (any pairs: agreement is about the annotators, not the reward model); with people, the labels in
  the store are used when pairs have several.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from rlhf_lab.audit import prose, stats
from rlhf_lab.audit.plots import bars, finished
from rlhf_lab.audit.prose import NO_WORLD
from rlhf_lab.runfolder import read_jsonl
from rlhf_lab.world import Prompt, hash_seed
from rlhf_lab.world.annotators import build_population, judge

if TYPE_CHECKING:
    from rlhf_lab.audit.sampling import AuditContext

NAME = "flattening"
TITLE = "Flattening of preferences"
CHOICES = ("a", "b", "tie")


def _gap(by_group: dict[str, list[float]], order: list[str], *, seed: int) -> dict:
    """first − last group of `order` (largest share − smallest), the two resampled apart."""
    if len(order) < 2 or not by_group.get(order[0]) or not by_group.get(order[-1]):
        return stats.empty()
    return stats.difference(by_group[order[-1]], by_group[order[0]], paired=False, seed=seed)


def rm_group_accuracy(ctx: AuditContext) -> dict[str, list[float]]:
    path = ctx.run / "reward" / "eval.jsonl"
    out: dict[str, list[float]] = defaultdict(list)
    for r in read_jsonl(path) if path.exists() else []:
        if r.get("annotator_group") is not None:
            out[str(r["annotator_group"])].append(float(r["correct"]))
    return dict(out)


def counterfactual_gold(ctx: AuditContext, name: str, groups: list[str]) -> dict[str, tuple[str, dict[str, float]]]:
    """Gold utility of model `name`'s held-out answers for a user of each group.
    → {prompt_id: (family, {group: gold})}."""
    index = ctx.eval_prompt_index()
    out = {}
    for r in ctx.eval_records(name):
        prompt = index.get(r["prompt_id"])
        if prompt is not None:
            out[prompt.id] = (prompt.family, {g: ctx.world.gold(prompt, r["response"], group=g) for g in groups})
    return out


def rm_detail_margins(ctx: AuditContext, n: int = 100) -> np.ndarray:
    """reward(detailed) − reward(concise) on open prompts, both answers correct, by the score the policy
    optimised. → (n,)"""
    return rm_detail_member_margins(ctx, n)[0]


def rm_detail_member_margins(ctx: AuditContext, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """`rm_detail_margins`, and the same by each member of a reward set: ((n,), (K, n))."""
    if ctx.rm is None:
        return np.zeros(0), np.zeros((0, 0))
    prompts = ctx.world.prompts("audit", n, seed=hash_seed(ctx.seed, 9) % 2**31, families=("open",))
    rng = random.Random(ctx.seed)
    p_ids = ctx.prompt_ids([ctx.prompt_text(p) for p in prompts])
    detailed = [ctx.response_ids(ctx.respond(p, "correct_detailed", rng)) for p in prompts]
    concise = [ctx.response_ids(ctx.respond(p, "correct_plain", rng)) for p in prompts]
    (agg_d, mem_d), (agg_c, mem_c) = ctx.scores(p_ids, detailed), ctx.scores(p_ids, concise)
    return agg_d - agg_c, mem_d - mem_c


def relabel_counts(ctx: AuditContext) -> tuple[dict[str, np.ndarray], str]:
    """Per family, (items, 3) counts of a/b/tie labels on the same pairs, and where they came from."""
    cfg = ctx.cfg.label
    by_family: dict[str, list[list[int]]] = defaultdict(list)
    if cfg.source == "simulated":
        pairs = read_jsonl(ctx.run / "pairs.jsonl") if (ctx.run / "pairs.jsonl").exists() else []
        rng = random.Random(hash_seed(ctx.seed, 61))
        pairs = rng.sample(pairs, min(len(pairs), ctx.sizes.relabel_pairs))
        population = build_population(groups=ctx.cfg.annotator_groups(), n_annotators=cfg.n_annotators, bias=cfg,
                                      seed=hash_seed(ctx.seed, 2))
        k = min(ctx.sizes.relabel_k, len(population))
        for pair in pairs:
            prompt = Prompt.from_dict(pair["meta"])
            fa, fb = ctx.world.parse(pair["response_a"], prompt), ctx.world.parse(pair["response_b"], prompt)
            counts = [0, 0, 0]
            for ann in rng.sample(population, k):
                j = judge(ann, prompt, fa, fb, rng=rng, hindsight=cfg.feedback == "hindsight", ties=cfg.ties,
                          tie_margin=cfg.tie_margin, strength_margin=cfg.strength_margin)
                counts[CHOICES.index(j.choice)] += 1
            by_family[prompt.family].append(counts)
        source = f"the simulated population relabelling {len(pairs)} pairs {k} times each"
    elif (ctx.run / "labels.sqlite").exists():
        from rlhf_lab.annotate.store import AnnotationStore

        store = AnnotationStore.for_run(ctx.run.root)
        project = store.project("run")
        rows = store.label_rows(project.id) if project is not None else []
        store.close()
        items: dict[str, list[int]] = {}
        fams: dict[str, str] = {}
        for r in rows:
            items.setdefault(r["pair_id"], [0, 0, 0])[CHOICES.index(r["choice"])] += 1
            fams[r["pair_id"]] = str((r.get("meta") or {}).get("family"))
        for pid, counts in items.items():
            by_family[fams[pid]].append(counts)
        source = f"the labels in the store ({len(rows)} labels on {len(items)} pairs)"
    else:
        source = "no labels to compare"
    return {f: np.array(v, dtype=float) for f, v in by_family.items()}, source


def pairwise_agreement(counts: np.ndarray) -> np.ndarray:
    """Per item, the share of its label pairs that agree, (U, 3) → (U,) over items with ≥ 2 labels."""
    m = counts.sum(1)
    ok = m >= 2
    return ((counts * (counts - 1)).sum(1)[ok] / (m * (m - 1))[ok]) if counts.size else np.zeros(0)


def measure(ctx: AuditContext) -> dict:
    metrics: dict[str, dict] = {}
    notes: list[str] = []
    ann_groups = sorted(ctx.cfg.annotator_groups(), key=lambda g: -g.share)
    acc = rm_group_accuracy(ctx)
    order = [g.name for g in ann_groups if g.name in acc]
    for g in order:
        metrics[f"rm_accuracy/{g}"] = stats.single(acc[g], kind="rate", better="higher",
                                                   label=f"reward-model accuracy on {g} annotators' labels")
    if len(order) >= 2:
        metrics["rm_accuracy_gap"] = {"label": f"accuracy gap, {order[0]} − {order[-1]}", "kind": "rate",
                                      "better": "lower", "rm": _gap(acc, order, seed=31)}
    elif len(ann_groups) < 2:
        notes.append("One annotator group: there is no between-group accuracy gap to measure.")
    else:
        notes.append("The held-out labels come from fewer than two annotator groups: no accuracy gap to measure.")
    if not ctx.has_world:
        notes.append(f"Gold utility per user group: {NO_WORLD}.")
        return {"title": TITLE, "metrics": metrics, "notes": notes, "groups": order}
    users = [g.name for g in sorted(ctx.cfg.world.user_groups, key=lambda g: -g.share)]
    gold = {name: counterfactual_gold(ctx, name, users) for name in ("sft", "policy")}
    ids = [i for i in gold["sft"] if i in gold["policy"]]  # the same prompts, paired
    for g in users:
        metrics[f"gold/{g}"] = stats.compare([gold["sft"][i][1][g] for i in ids],
                                             [gold["policy"][i][1][g] for i in ids], kind="mean", better="higher",
                                             label=f"gold utility for {g} users", seed=32)
    if len(users) >= 2:
        # Tastes differ only on open requests: the gap there is the flattening itself, undiluted.
        for key, keep, where in (("gold_gap", lambda f: True, ""), ("gold_gap/open", lambda f: f == "open",
                                                                     ", open requests")):
            sel = [i for i in ids if keep(gold["sft"][i][0])]
            diff = {name: [gold[name][i][1][users[0]] - gold[name][i][1][users[-1]] for i in sel] for name in gold}
            metrics[key] = stats.compare(diff["sft"], diff["policy"], kind="mean", better=None, seed=33,
                                         label=f"gold gap, {users[0]} − {users[-1]} users{where}")
    margins, by_member = rm_detail_member_margins(ctx)
    if margins.size:
        metrics["rm_prefers_detail"] = stats.single((margins > 0).astype(float), kind="rate", better=None,
                                                    label="reward model prefers the detailed answer")
        for m, key in zip(by_member, ctx.rm_members.values(), strict=False):  # a reward set: each member
            metrics[f"rm_prefers_detail_member/{key}"] = stats.single(
                (m > 0).astype(float), kind="rate", better=None, label=f"… by reward-model member {key}")
    counts, source = relabel_counts(ctx)
    for fam in sorted(counts):
        agree = pairwise_agreement(counts[fam])
        if agree.size:
            metrics[f"agreement/{fam}"] = {"label": f"annotator agreement, {fam}", "kind": "rate", "better": None,
                                           "pool": stats.mean(agree, seed=34)}
    if counts:
        metrics["agreement_alpha"] = {"label": "Krippendorff's α, all families", "kind": "mean", "better": None,
                                      "pool": stats.krippendorff_alpha(np.concatenate(list(counts.values())))}
    pool = {g.name: g.share / sum(x.share for x in ann_groups) for g in ann_groups}
    detail_share = sum(pool[g.name] for g in ann_groups if g.detail_preference > 0)
    return {"title": TITLE, "metrics": metrics, "notes": notes, "groups": order, "user_groups": users,
            "agreement_source": source, "pool": pool, "detail_share": detail_share}


def plot(section: dict, plt):
    m = section.get("metrics", {})
    if not m:
        return None
    panels = [("% of the group's held-out labels\nthe reward model agrees with",
               [(k.split("/", 1)[1], v) for k, v in m.items() if k.startswith("rm_accuracy/")],
               "Reward-model accuracy\nby annotator group"),
              ("gold utility (true benefit)", [(k.split("/", 1)[1], v) for k, v in m.items() if k.startswith("gold/")],
               "Gold utility\nby user group"),
              ("% of label pairs that agree",
               [(k.split("/", 1)[1], v) for k, v in m.items() if k.startswith("agreement/")],
               "Annotator agreement by prompt family")]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(11, 3.3),
                             gridspec_kw={"width_ratios": [max(2.5, len(p[1])) for p in panels]})
    axes = np.atleast_1d(axes)
    for ax, (ylabel, rows, title) in zip(axes, panels, strict=True):
        bars(ax, rows, title=title, ylabel=ylabel)
        if len(rows) > 4:  # anchored at their right end, rotated labels stay under their bar and inside the figure
            ax.tick_params(axis="x", labelrotation=30)
            for lbl in ax.get_xticklabels():
                lbl.set_horizontalalignment("right")
                lbl.set_rotation_mode("anchor")
    return finished(fig)


def reading(section: dict) -> str:
    m = section.get("metrics", {})
    parts = []
    groups = section.get("groups", [])
    if len(groups) >= 2 and "rm_accuracy_gap" in m:
        gap = m["rm_accuracy_gap"]["rm"]
        accs = ", ".join(f"{g} {prose.interval(m[f'rm_accuracy/{g}']['rm'], 'rate')}" for g in groups)
        parts.append(f"The reward model predicts the labels of the {groups[0]} annotators (the larger group) "
                     f"and the {groups[-1]} ones with accuracy {accs}; the gap, "
                     f"{prose.change_interval(gap, 'rate')}, "
                     + ("is within noise." if stats.within_noise(gap) else "is larger than the noise."))
    users = section.get("user_groups", [])
    if "gold_gap/open" in m:
        gg = m["gold_gap/open"]
        parts.append(prose.change_sentence(gg, f"On open requests — the only prompts where the groups' tastes "
                                               f"differ — the gold-utility gap between {users[0]} and {users[-1]} "
                                               "users"))
        parts.append(prose.change_sentence(m["gold_gap"], "Over all held-out prompts the gap"))
        p = gg.get("policy", {}).get("value")
        if p is not None and not stats.within_noise(gg.get("policy")):
            if p > 0:
                parts.append(f"After RLHF the policy serves {users[0]} users — the larger group — better: one "
                             "policy for everyone cannot match both tastes, and the reward leans toward the taste "
                             "of the larger annotator group.")
            else:
                parts.append(f"After RLHF the policy serves {users[-1]} users — the smaller group — better: the "
                             "majority's taste did not win here; the gap follows from other changes RLHF made "
                             "(see the answer length under over-optimisation).")
    rm = m.get("rm_prefers_detail", {}).get("rm")
    if rm and rm.get("value") is not None:
        parts.append(f"On constructed pairs the reward model prefers the detailed answer "
                     f"{prose.interval(rm, 'rate')}; {100 * section.get('detail_share', 0):.0f} % of the annotator "
                     "pool likes detail.")
    alpha = m.get("agreement_alpha", {}).get("pool")
    if alpha and alpha.get("value") is not None:
        low = min(((k.split("/", 1)[1], v["pool"]["value"]) for k, v in m.items() if k.startswith("agreement/")),
                  key=lambda t: t[1])
        parts.append(f"Annotators agree with each other at Krippendorff's α = {prose.interval(alpha)} "
                     f"(from {section.get('agreement_source')}); least on {low[0]} prompts "
                     f"({100 * low[1]:.0f} % of label pairs agree).")
    parts.extend(section.get("notes", []))
    return " ".join(parts)

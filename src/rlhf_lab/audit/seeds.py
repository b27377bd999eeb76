"""Conclusions over seeds, not one trajectory. PPO amplifies rounding: the same seed on a different thread
count can end at a different KL (12 vs 35 nats measured on one default config), so one run's direction is an
anecdote. Runs that share a config except their seed are replicates: each tension's change SFT → RLHF is
stated as a mean over them with a Student-t 95 % interval, and as the number of seeds on which its direction
held (Henderson et al. 2018, "Deep Reinforcement Learning that Matters", make the same case for RL).

    groups = replicate_groups(cfgs)                 # [[run index, …], …] of runs differing only in seed
    rows = over_seeds(audits, COMPARE)              # one row per metric
"""

from __future__ import annotations

from rlhf_lab.audit import page, prose, stats
from rlhf_lab.audit.choices import flat_config

# A direction "holds" when the seeds' mean interval excludes zero and this share of seeds agree with it …
HOLDS = 0.8
# … over at least this many seeds (two seeds that happen to agree exactly have an interval of width zero).
MIN_SEEDS = 3


def replicate_groups(cfgs: list[dict]) -> list[list[int]]:
    """Indices of runs whose configs are equal but for `seed` (groups of two or more, in run order)."""
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = tuple(sorted((k, v) for k, v in flat_config(cfg).items() if k != "seed"))
        groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _per_seed(m: dict | None) -> tuple[str, float | None, bool]:
    """(what, value, beyond noise): the change SFT → RLHF where there is one, else the value of the reward
    model or the annotator pool."""
    if not m:
        return "", None, False
    if (m.get("change") or {}).get("value") is not None:
        return "change", m["change"]["value"], not stats.within_noise(m["change"])
    for who in ("rm", "pool", "policy"):
        if (m.get(who) or {}).get("value") is not None:
            return who, m[who]["value"], False
    return "", None, False


def over_seeds(audits: list[dict], keys: dict[str, tuple[str, ...]]) -> list[dict]:
    """Per tension and metric: the mean over seeds with its t interval, and on how many seeds the direction of
    the change held. Rows: {"tension", "key", "label", "kind", "what", "mean", "values", "held", "beyond",
    "n", "verdict"}."""
    rows = []
    for tension, metric_keys in keys.items():
        for key in metric_keys:
            ms = [a.get("tensions", {}).get(tension, {}).get("metrics", {}).get(key) for a in audits]
            first = next((m for m in ms if m), None)
            if first is None:
                continue
            per = [_per_seed(m) for m in ms]
            what = next((w for w, _, _ in per if w), "")
            values = [v for w, v, _ in per if w == what and v is not None]
            est = _clip(stats.mean_t(values), first.get("kind", "mean"), what)
            row = {"tension": tension, "key": key, "label": first.get("label", key), "kind": first.get("kind", "mean"),
                   "what": what, "mean": est, "values": values, "n": len(values), "held": None, "beyond": None,
                   "verdict": "none"}
            if what == "change" and est["value"] is not None:
                up = est["value"] > 0
                row["held"] = sum((v > 0) == up and v != 0 for v in values)
                row["beyond"] = sum(b and (v > 0) == up and v != 0 for _, v, b in per if v is not None)
                excludes = est["lo"] is not None and not stats.within_noise(est)
                row["verdict"] = ("few" if len(values) < MIN_SEEDS else "flat" if est["value"] == 0 else
                                  "holds" if excludes and row["held"] >= HOLDS * len(values) else "mixed")
            rows.append(row)
    return rows


def _clip(est: dict, kind: str, what: str) -> dict:
    """A t interval knows no bounds: a rate's stays in [0, 1], a change of a rate in [−1, 1]."""
    if kind != "rate" or est.get("lo") is None:
        return est
    low = -1.0 if what == "change" else 0.0
    return {**est, "lo": max(low, est["lo"]), "hi": min(1.0, est["hi"])}


def sentence(row: dict) -> str:
    """'Gold utility: −0.60 on average over 5 seeds (95 % CI −0.80 to −0.40); down on 5 of 5 seeds (4 beyond
    their own noise).'"""
    kind, est, n = row["kind"], row["mean"], row["n"]
    label = row["label"][:1].upper() + row["label"][1:]
    if est["value"] is None:
        return f"{label}: no values."
    if row["what"] != "change":
        return (f"{label} ({'reward model' if row['what'] == 'rm' else 'annotators'}): "
                f"{prose.num(est['value'], kind)} on average over {n} seeds{_ci(est, kind, signed=False)}.")
    if row["verdict"] == "flat":
        return f"{label}: no change on any of {n} seeds."
    up = est["value"] > 0
    text = (f"{label}: {prose.signed(est['value'], kind)} on average over {n} seeds{_ci(est, kind, signed=True)}; "
            f"{'up' if up else 'down'} on {row['held']} of {n} seeds ({row['beyond']} beyond their own noise)")
    return text + {"holds": ".", "mixed": " — not a finding that holds across seeds.",
                   "few": f" — too few seeds to say (at least {MIN_SEEDS})."}[row["verdict"]]


def _ci(est: dict, kind: str, *, signed: bool) -> str:
    if est.get("lo") is None:
        return ""
    fmt = prose.signed if signed else prose.num
    return f" (95 % CI {fmt(est['lo'], kind)} to {fmt(est['hi'], kind)})"


BADGE = {"holds": ("better", "holds"), "mixed": ("noise", "mixed across seeds"), "flat": ("none", "no change"),
         "few": ("none", "too few seeds"), "none": ("none", "—")}


def _cell_values(row: dict) -> str:
    rate, change = row["kind"] == "rate", row["what"] == "change"
    if rate:
        return ", ".join(f"{100 * v:+.0f}" if change else f"{100 * v:.0f} %" for v in row["values"])
    return ", ".join(f"{v:+.2f}" if change else f"{v:.2f}" for v in row["values"])


def section_html(audits: list[dict], names: list[str], groups: list[list[int]],
                 keys: dict[str, tuple[str, ...]]) -> str:
    """The "over seeds" section of compare.html: per group of replicates, what holds in words, then a table."""
    out = []
    for g in groups:
        rows = over_seeds([audits[i] for i in g], keys)
        holds = [sentence(r) for r in rows if r["verdict"] == "holds"]
        mixed = [r["label"] for r in rows if r["verdict"] == "mixed"]
        reading = (("Holds across the seeds: " + " ".join(holds)) if holds else
                   "No change holds across these seeds.")
        if mixed:
            reading += " Not a finding — the direction differs between seeds or the interval contains zero: " \
                       + "; ".join(mixed) + "."
        if len(g) < MIN_SEEDS:
            reading = f"{len(g)} seeds are too few to call any direction a finding (at least {MIN_SEEDS})."
        body = []
        for r in rows:
            cls, text = BADGE[r["verdict"]]
            held = "—" if r["held"] is None else f"{r['held']} of {r['n']} ({r['beyond']} beyond noise)"
            head = "change " if r["what"] == "change" else "reward model " if r["what"] == "rm" else ""
            mean = prose.change_interval(r["mean"], r["kind"]) if r["what"] == "change" else \
                prose.short(r["mean"], r["kind"])
            body.append(f"<tr><td>{page.esc(r['label'])}<br><small class=sub>{page.esc(r['tension'])}/"
                        f"{page.esc(r['key'])}</small></td><td class=num>{page.esc(head + mean)}</td>"
                        f"<td class=num>{page.esc(held)}</td><td class=num>{page.esc(_cell_values(r))}</td>"
                        f'<td><span class="badge {cls}">{page.esc(text)}</span></td></tr>')
        out.append(f"<h3>{len(g)} seeds of one config: {page.esc(', '.join(names[i] for i in g))}</h3>"
                   f'<div class="reading">{page.esc(reading)}</div>'
                   "<table><tr><th>metric</th><th>mean over seeds [95 % t interval]</th><th>direction held</th>"
                   "<th>per seed</th><th></th></tr>" + "".join(body) + "</table>")
    return ('<section id="seeds"><h2>Over seeds</h2><p class=sub>Runs that differ only in their seed are '
            "replicates. A change SFT → RLHF is stated as its mean over the seeds with a Student-t 95 % interval, "
            "and by how many seeds moved the same way; it holds when that interval excludes zero and at least "
            f"{HOLDS:.0%} of at least {MIN_SEEDS} seeds agree. One seed's direction is an anecdote: "
            "docs/audit.md says why.</p>" + "".join(out) + "</section>")

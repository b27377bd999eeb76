"""Mean and 95 % interval over seeds of the headline audit figures of several runs, as a Markdown table.

    python benchmarks/summarise_runs.py runs/sweep-feedback/*  [--by NAME_REGEX]

Runs are grouped by their folder name with the seed part removed (`…seed=1…` → one group), so a sweep over
seeds gives one row per setting. The interval is mean ± t₀.₉₇₅·s/√n over seeds (n ≥ 2), which is about the
variation between whole runs — the honest unit when comparing settings."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from pathlib import Path

# t quantile 0.975 for n − 1 degrees of freedom
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}

COLUMNS = {
    "proxy": "audit/overoptimisation/proxy/policy",
    "gold": "audit/overoptimisation/gold/policy",
    "Δgold": "audit/overoptimisation/gold/change",
    "KL": "audit/overoptimisation/kl/policy",
    "RM prefers syc.": "audit/sycophancy/rm_prefers_sycophantic/rm",
    "false approval": "audit/sycophancy/false_approval/policy",
    "acc. wrong belief": "audit/sycophancy/accuracy_wrong_belief/policy",
    "EAD per input": "audit/diversity/per_input/ead/policy",
}


def run_figures(run: Path) -> dict[str, float]:
    audit = json.loads((run / "audit.json").read_text())
    flat = dict(audit["flat"])
    curve = audit["tensions"]["overoptimisation"]["rl"]["curve"]
    if curve:
        best = max(curve, key=lambda p: p["gold"])
        flat["peak gold"], flat["KL at peak"] = best["gold"], best["kl"]
    groups = [k for k in flat if k.startswith("audit/flattening/gold/") and k.endswith("/policy")]
    if groups:
        flat["min group gold"] = min(flat[k] for k in groups)
        for k in groups:
            flat[f"gold {k.split('/')[3]}"] = flat[k]
    rm = run / "reward" / "metrics.json"
    if rm.exists():
        flat["RM acc"] = json.loads(rm.read_text()).get("reward/accuracy", float("nan"))
    return flat


def mean_ci(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return "–"
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return f"{m:.3f}"
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return f"{m:.3f} ± {T975.get(len(xs) - 1, 1.96) * s / math.sqrt(len(xs)):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--extra", nargs="*", default=[], help="More keys of audit.json's flat table (or the derived "
                    "ones: 'peak gold', 'KL at peak', 'min group gold', 'gold GROUP', 'RM acc').")
    args = ap.parse_args()
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in args.runs:
        if (run / "audit.json").exists():
            name = re.sub(r"[,_-]?seed[=-]\d+", "", run.name).strip(",_-") or run.name
            groups[name].append(run_figures(run))
    cols = {**{"RM acc": "RM acc"}, **COLUMNS, "peak gold": "peak gold", "KL at peak": "KL at peak",
            **{k: k for k in args.extra}}
    print("| setting | n | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, figs in groups.items():
        print(f"| {name} | {len(figs)} | " + " | ".join(mean_ci([f.get(v) for f in figs]) for v in cols.values())
              + " |")


if __name__ == "__main__":
    main()

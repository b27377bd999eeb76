"""Gold at each run's best evaluation point and at its last, minus the SFT policy's, from the per-prompt records
policy optimisation keeps (checkpoints/evals/) — no audit needed, so it reads runs whose policy step was rerun
with other settings on a copy of a finished run's folder.

    python benchmarks/eval_gains.py runs/a/seed-0 runs/a/seed-1 … [--json out.json]

One Markdown row per run: the best point (update, KL) and its gain with the audit's paired bootstrap 95 %
interval (`audit.overoptimisation.gold_gain`), then the same at the last point; then per group of runs
(NAME-seed-K by NAME, other folders by their parent) on how many the best point's interval is above 0 and the
last point is below the best. With --families, also each run's mean gold per prompt family at the SFT policy
and at the last point."""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlhf_lab.audit.overoptimisation import eval_records, gold_gain


def family_gold(records: list[dict], family: str) -> float:
    return float(np.mean([r["gold"] for r in records if r["family"] == family]))


def gains(run: Path) -> dict | None:
    records = eval_records(run)
    if 0 not in records or len(records) < 2:
        return None
    points = sorted(records)
    gold = {u: float(np.mean([r["gold"] for r in records[u]])) for u in points}
    kl = {u: float(np.mean([r["kl"] for r in records[u]])) for u in points}
    best, last = max(points[1:], key=gold.__getitem__), points[-1]
    families = {f: (family_gold(records[0], f), family_gold(records[last], f))
                for f in sorted({r["family"] for r in records[0]})}
    return {"run": str(run), "best": best, "best_kl": kl[best], "best_gain": gold_gain(records, best),
            "last": last, "last_kl": kl[last], "last_gain": gold_gain(records, last), "gold_sft": gold[0],
            "families": families}


def row(g: dict) -> str:
    def est(e):
        return f"{e['value']:+.2f} [{e['lo']:+.2f}, {e['hi']:+.2f}]"
    run = Path(g["run"])
    return (f"| {run.parent.name}/{run.name} | {g['gold_sft']:+.2f} | {g['best']} ({g['best_kl']:.1f}) | "
            f"{est(g['best_gain'])} | {g['last']} ({g['last_kl']:.1f}) | {est(g['last_gain'])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--families", action="store_true", help="also gold per prompt family, SFT → last point")
    args = ap.parse_args()
    rows = [g for g in map(gains, args.runs) if g is not None]
    print("| run | gold SFT | best point (update, KL) | gain there [95 % CI] | last point (update, KL) "
          "| last − SFT [95 % CI] |")
    print("|---|---|---|---|---|---|")
    print("\n".join(map(row, rows)))
    groups: dict[str, list[dict]] = defaultdict(list)
    for g in rows:  # runs named NAME-seed-K group by NAME, others by their folder
        run = Path(g["run"])
        groups[str(run.parent / re.sub(r"-?seed-\d+$", "", run.name)).rstrip("/")].append(g)
    for name, gs in groups.items():
        above = sum(g["best_gain"]["lo"] > 0 for g in gs)
        fell = sum(g["last_gain"]["value"] < g["best_gain"]["value"] for g in gs)
        print(f"\n{name}: best point's interval above 0 on {above} of {len(gs)}; last below best on {fell} of "
              f"{len(gs)}; mean gain at best {np.mean([g['best_gain']['value'] for g in gs]):+.3f}")
    if args.families:
        for g in rows:
            cells = [f"{f} {sft:+.2f} → {end:+.2f}" for f, (sft, end) in g["families"].items()]
            print(f"\n{g['run']} (gold per family, SFT → update {g['last']}): " + "; ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

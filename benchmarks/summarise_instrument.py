"""Does RLHF help before it over-optimises? One row per run, then how many runs each reading held on.

    python benchmarks/summarise_instrument.py runs/seeds-default/seed-* [runs/seeds-pk1/seed-* ...]

Reads each run's reward/metrics.json, eval/summary.json and audit.json (the audit's over-optimisation peak
carries the gold gain over the SFT policy at the best evaluation point and at the last, paired over the same
held-out prompts, with a bootstrap 95 % interval). Prints a Markdown table, one row per run, and a summary per
group of runs (runs whose folders share a parent)."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def row(run: Path) -> dict:
    rm = json.loads((run / "reward" / "metrics.json").read_text())
    ev = json.loads((run / "eval" / "summary.json").read_text())
    audit = json.loads((run / "audit.json").read_text())
    rl = audit["tensions"]["overoptimisation"]["rl"]
    curve, peak = rl["curve"], rl["peak"] or {}
    sft, pol = ev["sft"], ev["policy"]
    gain, final = peak.get("gain") or {}, peak.get("final_gain") or {}
    return {
        "run": str(run),
        "rm_acc": rm["reward/accuracy"],
        "rm_syc": audit["flat"].get("audit/sycophancy/rm_prefers_sycophantic/rm"),
        "proxy_gain_std": ((pol["policy/proxy_reward"] - sft["sft/proxy_reward"])
                           / max(sft["sft/proxy_reward_std"], 1e-9)),
        "kl": pol["policy/kl"],
        "gold_sft": sft["sft/gold_utility"],
        "gold_peak": peak.get("gold"), "peak_step": peak.get("step"), "peak_kl": peak.get("kl"),
        "peak_gain": gain.get("value"), "peak_lo": gain.get("lo"), "peak_hi": gain.get("hi"),
        "gold_final": pol["policy/gold_utility"],
        "final_gain": final.get("value"), "final_lo": final.get("lo"), "final_hi": final.get("hi"),
        "points_below_2": sum(1 for c in curve if c["kl"] < 2.0),
        "well_formed": pol["policy/well_formed"],
    }


def fmt(x, spec: str = "+.2f") -> str:
    return "–" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    rows = [row(r) for r in args.runs if (r / "audit.json").exists()]
    print("| run | RM acc | RM prefers syc. | proxy gain (SFT std) | KL | gold SFT | best point (update, KL) | "
          "gain there [95 % CI] | gold at end | end − SFT [95 % CI] | points < 2 nats | well-formed at end |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['rm_acc']:.3f} | {fmt(r['rm_syc'], '.0%')} | {r['proxy_gain_std']:+.2f} | "
              f"{r['kl']:.1f} | {r['gold_sft']:+.2f} | {fmt(r['gold_peak'])} ({r['peak_step']}, "
              f"{fmt(r['peak_kl'], '.2f')}) | {fmt(r['peak_gain'])} [{fmt(r['peak_lo'])}, {fmt(r['peak_hi'])}] | "
              f"{r['gold_final']:+.2f} | {fmt(r['final_gain'])} [{fmt(r['final_lo'])}, {fmt(r['final_hi'])}] | "
              f"{r['points_below_2']} | {r['well_formed']:.2f} |")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[str(Path(r["run"]).parent)].append(r)
    print()
    for name, rs in groups.items():
        n = len(rs)

        def held(pred, rs=rs) -> int:
            return sum(1 for r in rs if pred(r))

        def mean(key: str, rs=rs) -> float:
            return sum(r[key] for r in rs) / len(rs)

        print(f"- {name} ({n} runs): RM accuracy mean {mean('rm_acc'):.3f}; proxy gain mean "
              f"{mean('proxy_gain_std'):+.2f} SFT std; gold at the best point above SFT's with the interval above 0 "
              f"on {held(lambda r: (r['peak_lo'] or 0) > 0 and r['peak_step'])} of {n}; the end below the best "
              f"point on {held(lambda r: r['gold_final'] < (r['gold_peak'] or 0))} of {n}; the end above SFT with "
              f"the interval above 0 on {held(lambda r: (r['final_lo'] or 0) > 0)} of {n}, below with the interval "
              f"below 0 on {held(lambda r: (r['final_hi'] or 0) < 0)} of {n}; ≥ 4 points below 2 nats on "
              f"{held(lambda r: r['points_below_2'] >= 4)} of {n}; well-formed ≥ 0.8 at the end on "
              f"{held(lambda r: r['well_formed'] >= 0.8)} of {n}; the reward model prefers the sycophantic answer "
              f"< 50 % on {held(lambda r: r['rm_syc'] is not None and r['rm_syc'] < 0.5)} of {n}.")


if __name__ == "__main__":
    main()

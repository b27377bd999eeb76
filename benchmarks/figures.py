"""The measured figures of run folders and benchmark outputs, and the Markdown tables the docs print them in.

One place for both, so that a summarising script (summarise_instrument.py, summarise_runs.py, run_default.py)
and the regenerator of the docs' tables (measured.py) cannot drift apart. Every function reads what a run
wrote (reward/metrics.json, eval/summary.json, audit.json, state.json) and never recomputes an estimate."""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from rlhf_lab.runfolder import code_commit


def stamp() -> dict:
    """The date and commit every benchmark's --json output carries (measured.py stamps the docs with them)."""
    return {"date": datetime.date.today().isoformat(), "commit": code_commit()}

# ---------------------------------------------------------------- does RLHF help before it over-optimises?

INSTRUMENT_HEADER = (
    "| run | RM acc | RM prefers syc. | proxy gain (SFT std) | KL | gold SFT | best point (update, KL) | "
    "gain there [95 % CI] | gold at end | end − SFT [95 % CI] | points < 2 nats | well-formed at end |")


def instrument_row(run: Path) -> dict:
    """One run's over-optimisation reading: the audit's peak carries the paired gold gain over the SFT policy at
    the best evaluation point and at the last, with a bootstrap 95 % interval."""
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


def instrument_table(rows: list[dict], *, name: Callable[[dict], str] = lambda r: r["run"]) -> list[str]:
    lines = [INSTRUMENT_HEADER, "|" + "---|" * INSTRUMENT_HEADER.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {name(r)} | {r['rm_acc']:.3f} | {fmt(r['rm_syc'], '.0%')} | {r['proxy_gain_std']:+.2f} | "
            f"{r['kl']:.1f} | {r['gold_sft']:+.2f} | {fmt(r['gold_peak'])} ({r['peak_step']}, "
            f"{fmt(r['peak_kl'], '.2f')}) | {fmt(r['peak_gain'])} [{fmt(r['peak_lo'])}, {fmt(r['peak_hi'])}] | "
            f"{r['gold_final']:+.2f} | {fmt(r['final_gain'])} [{fmt(r['final_lo'])}, {fmt(r['final_hi'])}] | "
            f"{r['points_below_2']} | {r['well_formed']:.2f} |")
    return lines


def instrument_summary(rows: list[dict]) -> str:
    """On how many runs each reading held (the issue's acceptance criteria), as one sentence without a subject."""
    n = len(rows)

    def held(pred) -> int:
        return sum(1 for r in rows if pred(r))

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / n

    return (f"RM accuracy mean {mean('rm_acc'):.3f}; proxy gain mean {mean('proxy_gain_std'):+.2f} SFT std; gold at "
            f"the best point above SFT's with the interval above 0 on "
            f"{held(lambda r: (r['peak_lo'] or 0) > 0 and r['peak_step'])} of {n}; the end below the best point on "
            f"{held(lambda r: r['gold_peak'] is not None and r['gold_final'] < r['gold_peak'])} of {n}; the end "
            f"above SFT with the interval "
            f"above 0 on {held(lambda r: (r['final_lo'] or 0) > 0)} of {n}, below with the interval below 0 on "
            f"{held(lambda r: (r['final_hi'] or 0) < 0)} of {n}; ≥ 4 points below 2 nats on "
            f"{held(lambda r: r['points_below_2'] >= 4)} of {n}; well-formed ≥ 0.8 at the end on "
            f"{held(lambda r: r['well_formed'] >= 0.8)} of {n}; the reward model prefers the sycophantic answer "
            f"< 50 % on {held(lambda r: r['rm_syc'] is not None and r['rm_syc'] < 0.5)} of {n}.")


# ---------------------------------------------------------------- mean and interval over seeds

# t quantile 0.975 for n − 1 degrees of freedom
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}

SEEDS_COLUMNS = {
    "RM acc": "RM acc",
    "proxy": "audit/overoptimisation/proxy/policy",
    "gold": "audit/overoptimisation/gold/policy",
    "Δgold": "audit/overoptimisation/gold/change",
    "KL": "audit/overoptimisation/kl/policy",
    "RM prefers syc.": "audit/sycophancy/rm_prefers_sycophantic/rm",
    "false approval": "audit/sycophancy/false_approval/policy",
    "acc. wrong belief": "audit/sycophancy/accuracy_wrong_belief/policy",
    "EAD per input": "audit/diversity/per_input/ead/policy",
    "peak gold": "peak gold",
    "KL at peak": "KL at peak",
}


def run_figures(run: Path) -> dict[str, float]:
    """audit.json's flat table plus the derived figures: 'peak gold', 'KL at peak', 'min group gold',
    'gold GROUP', 'RM acc'."""
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


def mean_ci(xs: list[float | None]) -> str:
    """mean ± t₀.₉₇₅·s/√n over whole runs (n ≥ 2), the honest unit when comparing settings."""
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return "–"
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return f"{m:.3f}"
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return f"{m:.3f} ± {T975.get(len(xs) - 1, 1.96) * s / math.sqrt(len(xs)):.3f}"


def setting_name(run: Path) -> str:
    """A run folder's name with its seed part removed (`…seed=1…` → the setting), so seeds group together;
    `rlhf-lab run --seeds`'s OUT/seed-N are named by OUT."""
    return re.sub(r"[,_-]?seed[=-]\d+", "", run.name).strip(",_-") or run.parent.name


def seeds_table(runs: list[Path], *, extra: list[str] = ()) -> list[str]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if (run / "audit.json").exists():
            groups.setdefault(setting_name(run), []).append(run_figures(run))
    cols = {**SEEDS_COLUMNS, **{k: k for k in extra}}
    lines = ["| setting | n | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, figs in groups.items():
        lines.append(f"| {name} | {len(figs)} | "
                     + " | ".join(mean_ci([f.get(v) for f in figs]) for v in cols.values()) + " |")
    return lines


# ---------------------------------------------------------------- the default run (run_default.py --json)

DEFAULT_RUN_HEADER = ("| seed | wall s | peak RSS GB | RM held-out acc | proxy SFT → RL (gain in SFT std) | "
                      "gold SFT → RL | KL (nats) |")


def default_run_record(out: Path, *, wall_s: float, peak_rss_gb: float, sets: list[str]) -> dict:
    """What one timed default run measured, for run_default.py's --json and the docs' table."""
    import yaml

    s = json.loads((out / "eval" / "summary.json").read_text())
    rm = json.loads((out / "reward" / "metrics.json").read_text())
    sft, pol = s["sft"], s["policy"]
    return {
        "seed": yaml.safe_load((out / "config.yaml").read_text()).get("seed"),
        "sets": sets, "wall_s": wall_s, "peak_rss_gb": peak_rss_gb, "rm_acc": rm["reward/accuracy"],
        "proxy_sft": sft["sft/proxy_reward"], "proxy_policy": pol["policy/proxy_reward"],
        "proxy_gain_std": (pol["policy/proxy_reward"] - sft["sft/proxy_reward"]) / sft["sft/proxy_reward_std"],
        "gold_sft": sft["sft/gold_utility"], "gold_policy": pol["policy/gold_utility"], "kl": pol["policy/kl"],
        "seconds_by_step": {k: v.get("seconds") for k, v in
                            json.loads((out / "state.json").read_text()).get("done", {}).items()},
    }


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")  # the docs' typographic minus


def default_run_table(records: list[dict]) -> list[str]:
    lines = [DEFAULT_RUN_HEADER, "|---|---|---|---|---|---|---|"]
    for r in records:
        sets = " ".join(s for s in r["sets"] if not s.startswith("seed="))
        lines.append(f"| {r['seed']}{' ' + sets if sets else ''} | {r['wall_s']:.0f} | {r['peak_rss_gb']:.2f} | "
                     f"{r['rm_acc']:.3f} | {_signed(r['proxy_sft'])} → {_signed(r['proxy_policy'])} "
                     f"({_signed(r['proxy_gain_std'])}) | {_signed(r['gold_sft'])} → {_signed(r['gold_policy'])} | "
                     f"{r['kl']:.1f} |")
    return lines


def run_date(run: Path) -> str | None:
    """The day a run folder's last step finished (state.json), YYYY-MM-DD."""
    state = run / "state.json"
    if not state.exists():
        return None
    ats = [v.get("at", "") for v in json.loads(state.read_text()).get("done", {}).values()]
    return max(ats)[:10] if ats else None


# ---------------------------------------------------------------- the annotation app under load (annotate_load.py)

ANNOTATE_LOAD_HEADER = ("| store | workers | annotators | offered | labels | labels/s | p50 ms | p99 ms | "
                        "server CPU/label ms | lost | duplicated | pairs over overlap | errors | load avg |")


def annotate_load_row(r: dict) -> str:
    return (f"| {r['store']} | {r['workers']} | {r['annotators']} | {r['offered']} | {r['labels']} | "
            f"{r['labels_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['server_cpu_ms_per_label']:.2f} | "
            f"{r['lost']} | {r['duplicated']} | {r['pairs_over_overlap']} | {r['errors']} | {r['load_avg']:.1f} |")


def annotate_load_table(records: list[dict]) -> list[str]:
    return [ANNOTATE_LOAD_HEADER, "|---" * ANNOTATE_LOAD_HEADER.count(" | ") + "|---|",
            *map(annotate_load_row, records)]


# ---------------------------------------------------------------- sampling alone (bench_generation.py --json)

SAMPLERS = {
    "hf_generate": "HF `generate`",
    "loop": "ours, eager loop over a growing KV cache",
    "static_graph": "ours, static KV cache, step recorded as a CUDA graph (the default on a GPU)",
}


def generation_table(result: dict) -> list[str]:
    lines = ["| sampler | ms per decoding step | tokens/s | vs HF `generate` |", "|---|---|---|---|"]
    for key, name in SAMPLERS.items():
        r = result[key]
        lines.append(f"| {name} | {r['ms_per_step']:.2f} | {r['tokens_per_s']:,.0f} | {r['vs_hf']:.2f}× |")
    return lines


# ---------------------------------------------------------------- what the SFT model knows (sft_knowledge.py --json)

def sft_knowledge_table(docs: list[dict]) -> list[str]:
    """One row per run: greedy answers right per kind of fact (the lowest temperature), and what sampling at the
    highest temperature says over all kinds."""
    lines = ["| SFT | sums | differences | capitals, rivers | sampled at T = 1, all kinds |", "|---|---|---|---|---|"]
    for d in docs:
        greedy_t, sampled_t = min(r["temperature"] for r in d["rows"]), max(r["temperature"] for r in d["rows"])

        def right(*, kinds: tuple[str, ...], difficulty: float | None = None, d=d, t=greedy_t) -> str:
            rows = [r for r in d["rows"] if r["temperature"] == t and r["kind"] in kinds
                    and (difficulty is None or r["difficulty"] == difficulty)]
            n = sum(r["n"] for r in rows)
            return f"{100 * sum(r['right'] * r['n'] for r in rows) / n:.0f} %" if n else "–"

        everything = next(r for r in d["rows"] if r["temperature"] == sampled_t and r["kind"] == "all")
        lines.append(f"| {d['sft_epochs']} epochs | {right(kinds=('arith',), difficulty=0.1)} | "
                     f"{right(kinds=('arith',), difficulty=0.2)} | {right(kinds=('capital', 'river'))} | "
                     f"{100 * everything['right']:.0f} % right, {100 * everything['no_answer']:.0f} % no answer |")
    return lines

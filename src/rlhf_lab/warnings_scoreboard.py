"""The early-warning scoreboard: each detector of early_warning.py scored against gold utility, in a world
where gold is known. Runs seeds × settings through the sweep machinery (resumable), reads each run's logged
history (what the detectors read) and the per-prompt gold of its evaluation points (what only the scoring
reads), and reports per detector: on how many runs whose gold falls it warned at or before the gold peak, its
lead time in updates and nats, its false alarms, and gold where `early_warning: stop` would have saved the
policy vs at the end vs at the peak, paired per run.

Thresholds are calibrated on calibration seeds and scored on disjoint scoring seeds: the rule that picks a
detector's threshold (the grid value with the most on-time warnings minus false alarms on the calibration
runs) sees gold only on the calibration runs, never on the scored ones.

    board = scoreboard(runs_by_seed_set)        # pure: from RunResults
    run_scoreboard(cfg, out=…, seeds="0-9", …)  # runs what is missing, writes scoreboard.md and .json
"""

from __future__ import annotations

import datetime
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from rlhf_lab import early_warning
from rlhf_lab.audit import stats
from rlhf_lab.runfolder import RunFolder, atomic_write_text, code_commit, read_jsonl
from rlhf_lab.sharing import run_shared
from rlhf_lab.sweep import SweepRun, parse_seeds

SETTINGS: dict[str, dict] = {"default": {}, "p_know1": {"label.p_know": 1.0},
                             "hindsight": {"label.feedback": "hindsight"}}
SCORING_SEEDS, CALIBRATION_SEEDS = "0-9", "100-104"
BAR_ON_TIME, BAR_FALSE = 0.7, 0.2  # issue 19's bar: on time in ≥ 70 % of falling runs, false alarms in ≤ 20 %
EARLY = 0.5  # a warning below this share of the peak's distance √KL is more than the margin early: false alarm
# --quick: a micro config that runs in seconds, enough points for a curve; for the end-to-end test
QUICK = ["sft.n_demos=1000", "sft.epochs=2", "sample.n_prompts=60", "sample.k=2", "reward.epochs=1",
         "reward.n_norm_samples=32", "policy.updates=6", "policy.batch_size=16", "policy.checkpoint_every=10",
         "policy.sample_table_every=10", "generation.max_new_tokens=24", "eval.n_prompts=32"]


@dataclass
class RunResult:
    """What the scoreboard reads of one finished run."""

    name: str
    setting: str
    seed: int
    history: list[dict]  # the policy step's metrics.jsonl records: all the detectors may read
    gold: dict[int, np.ndarray]  # evaluation point → per-prompt gold utility, prompts in one order (scoring only)
    kl: dict[int, float]  # update → objective/kl (0 at update 0)

    @property
    def points(self) -> list[int]:
        return sorted(self.gold)

    def mean_gold(self, u: int) -> float:
        return float(self.gold[u].mean())

    @property
    def peak(self) -> int:
        """The evaluation point of highest mean gold (the first, if tied): the oracle's stopping point."""
        return max(self.points, key=lambda u: (self.mean_gold(u), -u))

    @property
    def falls(self) -> bool:
        """Gold ends below its peak beyond noise: each prompt's gold at the peak of the *other* half of the
        prompts (stats.cross_fit_argmax) minus at the end, its 95 % interval over prompts above 0. Tested at the
        peak of all prompts, the maximum of noisy means, a flat curve of 11 points "fell" in 12 % of runs; so
        about 4 % (tests/test_warnings_scoreboard.py)."""
        gold = np.stack([self.gold[u] for u in self.points], axis=1)  # (P, J): the same prompts at every point
        drop = gold[np.arange(len(gold)), stats.cross_fit_argmax(gold)] - gold[:, -1]  # (P,)
        return len(drop) > 1 and stats.bootstrap_ci(drop)[0] > 0


def read_run(folder: Path, *, setting: str, seed: int) -> RunResult:
    history = RunFolder(folder).phase_metrics("policy")
    gold = {}
    for path in sorted((folder / "checkpoints" / "evals").glob("step_*.jsonl")):
        rows = sorted(read_jsonl(path), key=lambda r: str(r["prompt_id"]))
        gold[int(path.stem.split("_")[1])] = np.array([r["gold"] for r in rows], dtype=float)
    if not gold:
        raise FileNotFoundError(f"{folder}: no evaluation records (checkpoints/evals/step_*.jsonl)")
    kl = {0: 0.0, **dict(early_warning.series(history, "objective/kl"))}
    return RunResult(folder.name, setting, seed, history, gold, kl)


def score(run: RunResult, fired: int | None) -> dict:
    """One run, one detector's warning (the update it fired at, or None): when it came against the gold peak
    and what stopping there would have kept."""
    peak, end = run.peak, run.points[-1]
    saved = max((u for u in run.points if u < fired), default=0) if fired is not None else end
    row = {"run": run.name, "setting": run.setting, "seed": run.seed, "fired": fired, "peak": peak,
           "falls": run.falls, "saved": saved, "gold_stop": run.mean_gold(saved), "gold_end": run.mean_gold(end),
           "gold_peak": run.mean_gold(peak), "on_time": False, "by_next_point": False, "lead_updates": None,
           "lead_nats": None, "false_alarm": False}
    if fired is None:
        return row
    after_peak = min((u for u in run.points if u > peak), default=end)
    kl_at = _kl_at(run, fired)
    row.update(on_time=run.falls and fired <= peak, by_next_point=run.falls and fired <= after_peak,
               lead_updates=peak - fired, lead_nats=_kl_at(run, peak) - kl_at,
               false_alarm=not run.falls or math.sqrt(max(kl_at, 0)) < EARLY * math.sqrt(max(_kl_at(run, peak), 0)))
    return row


def _kl_at(run: RunResult, u: int) -> float:
    """objective/kl at update u (the last logged at or before it)."""
    return run.kl.get(u, max(((t, v) for t, v in run.kl.items() if t <= u), default=(0, 0.0))[1])


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def rows_for(runs: list[RunResult], name: str, threshold: float) -> list[dict]:
    d = early_warning.DETECTORS[name]
    return [score(r, d.fire(r.history, threshold)) for r in runs]


def calibrate(runs: list[RunResult], name: str) -> dict:
    """The threshold of the grid with the highest (share of falling runs warned on time) − (share of runs with
    a false alarm) on `runs`; ties go to the one that warns on fewer runs, then to the default."""
    d = early_warning.DETECTORS[name]
    table = []
    for t in d.grid:
        rows = rows_for(runs, name, t)
        on_time = _share([r["on_time"] for r in rows if r["falls"]]) or 0.0
        false = _share([r["false_alarm"] for r in rows]) or 0.0
        table.append({"threshold": t, "on_time": on_time, "false_alarms": false,
                      "warned": sum(r["fired"] is not None for r in rows), "utility": on_time - false})
    best = max(table, key=lambda c: (c["utility"], -c["warned"], c["threshold"] == d.threshold))
    return {"threshold": best["threshold"], "default": d.threshold, "grid": table}


def summarise(rows: list[dict]) -> dict:
    """Over the scored runs of one detector at its calibrated threshold."""
    falling = [r for r in rows if r["falls"]]
    warned = [r for r in rows if r["fired"] is not None]
    lead = [r for r in falling if r["fired"] is not None]

    def median(values: list[float]) -> dict:
        if not values:
            return stats.empty()
        lo, hi = stats.bootstrap_ci(values, lambda a: np.median(a, axis=1))
        return stats.estimate(float(np.median(values)), lo, hi, len(values))

    on_time = stats.rate([r["on_time"] for r in falling])
    false_rate = stats.rate([r["false_alarm"] for r in rows])
    return {
        "runs": len(rows), "falling": len(falling), "warned": len(warned),
        "meets_bar": bool(falling) and on_time["value"] >= BAR_ON_TIME and false_rate["value"] <= BAR_FALSE,
        "on_time": on_time,
        "by_next_point": stats.rate([r["by_next_point"] for r in falling]),
        "lead_updates": median([r["lead_updates"] for r in lead]),
        "lead_nats": median([r["lead_nats"] for r in lead]),
        "false_alarms": sum(r["false_alarm"] for r in rows),
        "false_alarm_rate": false_rate,
        "gold_stop": stats.mean_t([r["gold_stop"] for r in rows]),
        "gold_end": stats.mean_t([r["gold_end"] for r in rows]),
        "gold_peak": stats.mean_t([r["gold_peak"] for r in rows]),
        "stop_minus_end": stats.mean_t([r["gold_stop"] - r["gold_end"] for r in rows]),
        "peak_minus_stop": stats.mean_t([r["gold_peak"] - r["gold_stop"] for r in rows]),
        "stop_better": sum(r["gold_stop"] > r["gold_end"] for r in rows),
    }


def scoreboard(calibration: list[RunResult], scoring: list[RunResult]) -> dict:
    """Per detector: the threshold calibrated on `calibration`, then its scores on `scoring` (disjoint seeds)."""
    overlap = {r.seed for r in calibration} & {r.seed for r in scoring}
    if overlap:
        raise ValueError(f"calibration and scoring seeds overlap: {sorted(overlap)}")
    out = {}
    for name in early_warning.DETECTORS:
        cal = calibrate(calibration, name)
        rows = rows_for(scoring, name, cal["threshold"])
        out[name] = {"calibration": cal, "summary": summarise(rows), "runs": rows}
    return out


# -- running and writing ----------------------------------------------------------------------------------


def run_scoreboard(base: dict, *, out: Path, seeds: str = SCORING_SEEDS, calibration_seeds: str = CALIBRATION_SEEDS,
                   settings: list[str] | None = None, jobs: int = 1, echo=print) -> dict:
    """Run (or resume) every seed × setting, score the detectors, write scoreboard.md and scoreboard.json."""
    settings = settings or list(SETTINGS)
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"--settings: unknown {', '.join(map(repr, unknown))} (expected some of "
                         f"{', '.join(SETTINGS)})")
    score_seeds, cal_seeds = parse_seeds(seeds), parse_seeds(calibration_seeds)
    if set(score_seeds) & set(cal_seeds):
        raise ValueError(f"--seeds {seeds} and --calibration-seeds {calibration_seeds} overlap: calibration and "
                         "scoring must use disjoint seeds")
    runs = [SweepRun(name=f"{s}_seed-{seed}", overrides={**SETTINGS[s], "seed": seed})
            for s in settings for seed in [*cal_seeds, *score_seeds]]
    t0 = time.time()
    root = out / "runs"
    # a seed's settings differ only in who labels: its SFT policy and samples are made once (sharing.py)
    run_shared("warnings-scoreboard", base, runs, root, source="warnings-scoreboard", jobs=jobs, report=False,
               echo=echo)
    results = [read_run(root / r.name, setting=r.name.split("_seed-")[0], seed=r.overrides["seed"]) for r in runs]
    board = scoreboard([r for r in results if r.seed in cal_seeds], [r for r in results if r.seed in score_seeds])
    meta = {"settings": {s: SETTINGS[s] for s in settings}, "scoring_seeds": score_seeds,
            "calibration_seeds": cal_seeds, "early_margin": EARLY, "date": datetime.date.today().isoformat(),
            "commit": code_commit(), "seconds": round(time.time() - t0),  # this invocation: runs resumed count less
            "jobs": jobs}
    atomic_write_text(out / "scoreboard.json", json.dumps({**meta, "detectors": board}, indent=1))
    atomic_write_text(out / "scoreboard.md", markdown(board, meta))
    echo(f"Scoreboard: {out / 'scoreboard.md'}")
    return board


def _fmt(est: dict, digits: int = 2) -> str:
    if est.get("value") is None:
        return "—"
    interval = f" [{est['lo']:.{digits}f}, {est['hi']:.{digits}f}]" if est.get("lo") is not None else ""
    return f"{est['value']:.{digits}f}{interval}"


def _pct(est: dict) -> str:
    if est.get("value") is None:
        return "—"
    count = f" ({round(est['value'] * est['n'])}/{est['n']})"
    return f"{100 * est['value']:.0f} % [{100 * est['lo']:.0f}, {100 * est['hi']:.0f}]{count}"


def markdown(board: dict, meta: dict) -> str:
    """scoreboard.md: the table with what it means, then each detector's calibration grid."""
    return (f"# Early-warning scoreboard\n\n{table_markdown(board, meta)}\n\n## Calibration (calibration seeds)\n\n"
            f"{calibration_markdown(board)}\n")


def table_markdown(board: dict, meta: dict) -> str:
    """What the columns mean, the table (one row per detector, scored runs) and which detectors meet the bar."""
    head = (f"Settings: {', '.join(meta['settings'])}. Thresholds calibrated on seeds "
            f"{meta['calibration_seeds']}, scored on seeds {meta['scoring_seeds']} (disjoint). A run's gold "
            "*falls* when its last evaluation point is below its peak with the paired 95 % interval over prompts "
            "below 0, each prompt compared at the peak of the other half of the prompts. *On time*: warned at or "
            "before the gold peak, among the runs whose gold falls (Wilson "
            "interval). *False alarm*: a warning in a run whose gold does not fall, or at √KL below "
            f"{meta['early_margin']:g} × the peak's. Lead: median [bootstrap 95 %] of peak − warning, over the "
            "falling runs it warned in. Gold at *stop* is the last evaluation point before the warning (what "
            "`early_warning: stop` saves; the end when it never warned); differences are paired per run "
            "(mean, t interval).\n\n")
    cols = ["detector", "threshold (default)", "on time", "by the next point", "lead (updates)", "lead (nats)",
            "false alarms", "gold: stop − end", "gold: peak − stop", "stop > end"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, b in board.items():
        s, c = b["summary"], b["calibration"]
        lines.append("| " + " | ".join([
            name, f"{c['threshold']:g} ({c['default']:g})", _pct(s["on_time"]), _pct(s["by_next_point"]),
            _fmt(s["lead_updates"], 0), _fmt(s["lead_nats"]), f"{s['false_alarms']}/{s['runs']} "
            f"({s['warned']} warned)", _fmt(s["stop_minus_end"]), _fmt(s["peak_minus_stop"]),
            f"{s['stop_better']}/{s['runs']}"]) + " |")
    any_board = next(iter(board.values()))["summary"]
    meets = [n for n, b in board.items() if b["summary"]["meets_bar"]]
    tail = (f"\n\nOn time in ≥ {100 * BAR_ON_TIME:.0f} % of the falling runs with false alarms in ≤ "
            f"{100 * BAR_FALSE:.0f} % of the runs: {', '.join(meets) if meets else 'no detector'}.")
    tail += (f" Runs scored: {any_board['runs']}, of which gold falls in {any_board['falling']}. "
            f"Mean gold at the end {_fmt(any_board['gold_end'])}, at the oracle peak {_fmt(any_board['gold_peak'])}.")
    return head + "\n".join(lines) + tail


def calibration_markdown(board: dict) -> str:
    """Per detector, each threshold of its grid on the calibration runs: on time / false alarms / runs warned."""
    def cell(g: dict) -> str:
        return f"{g['threshold']:g}: {100 * g['on_time']:.0f} % / {100 * g['false_alarms']:.0f} % / {g['warned']}"

    rows = [f"| {n} | " + "; ".join(map(cell, b["calibration"]["grid"])) + " |" for n, b in board.items()]
    return "\n".join(["| detector | threshold: on time / false alarms / warned |", "|---|---|", *rows])


def base_config(cfg, *, quick: bool) -> dict:
    """The config every run shares (a dict, as a sweep's `base`); --quick puts the micro config on top."""
    from rlhf_lab.config import ConfigError, build_config

    if not hasattr(cfg.policy, "early_warning"):  # no online loop: no history for the detectors, nothing to score
        raise ConfigError(f"policy.algorithm={cfg.policy.algorithm}: the scoreboard scores the online loop's "
                          "warnings (ppo, rloo or grpo)")
    data = yaml.safe_load(build_config(yaml.safe_load(cfg.to_yaml()), QUICK if quick else []).to_yaml())
    data["policy"]["early_warning"] = "warn"  # a run stopped early would hide where its gold goes
    return data

"""Sweeps: a grid or list of config overrides, one run folder each, independent processes, resumable; then
one comparison report.

A sweep file:

    name: feedback
    base:                      # a config applied to every run (same sections as a config file)
      policy: {updates: 60}
    grid:                      # the cartesian product of these overrides …
      label.feedback: [foresight, hindsight]
      seed: [0, 1]
    runs:                      # … and/or an explicit list
      - {name: big-kl, set: {policy.kl_coef: 0.2}}

Each run is a separate `rlhf-lab run` process, so a sweep spreads over machines with a plain job array:
`rlhf-lab sweep FILE --only $SLURM_ARRAY_TASK_ID` on each node, then `rlhf-lab compare OUT/*/`.

`rlhf-lab run --seeds 0-4` is the sweep of one config over seeds (`run_seeds`): OUT/seed-0 … OUT/seed-4,
then a comparison that states each tension as a mean over the seeds (audit/seeds.py).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlhf_lab.config import ConfigError, build_config, read_yaml
from rlhf_lab.runfolder import RunFolder, atomic_write_text


@dataclass
class SweepRun:
    name: str
    overrides: dict = field(default_factory=dict)

    def override_list(self) -> list[str]:
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in self.overrides.items()]


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(value)).strip("-")[:40]


def load_sweep(path: str | Path) -> tuple[str, dict, list[SweepRun]]:
    """(name, base config dict, runs); every run's config is validated now, so a typo fails before any run."""
    data = read_yaml(path)
    unknown = set(data) - {"name", "base", "grid", "runs"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (expected name, base, grid, runs)")
    base = data.get("base") or {}
    runs: list[SweepRun] = []
    grid = data.get("grid") or {}
    if grid:
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ConfigError(f"{path}: grid must map each key to a non-empty list of values")
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            overrides = dict(zip(keys, combo, strict=True))
            name = "_".join(f"{k.split('.')[-1]}-{_slug(v)}" for k, v in overrides.items())
            runs.append(SweepRun(name=name, overrides=overrides))
    for i, item in enumerate(data.get("runs") or []):
        if not isinstance(item, dict) or "set" not in item:
            raise ConfigError(f"{path}: runs[{i}] needs a 'set' mapping of overrides (and optionally a name)")
        runs.append(SweepRun(name=str(item.get("name") or f"run{i}"), overrides=dict(item["set"] or {})))
    if not runs:
        raise ConfigError(f"{path}: no runs (give a grid or a list of runs)")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: run names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    for r in runs:
        try:
            build_config(base, r.override_list())
        except ConfigError as e:
            raise ConfigError(f"{path}: run {r.name!r}: {e}") from None
    return str(data.get("name") or Path(path).stem), base, runs


def _finished(folder: Path) -> bool:
    return (folder / "state.json").exists() and "evaluate" in RunFolder(folder).state().get("done", {})


def _command(folder: Path, base: dict, run: SweepRun, *, report: bool = True) -> list[str]:
    exe = [sys.executable, "-m", "rlhf_lab.cli", "run", "--quiet", *(() if report else ("--no-report",))]
    if (folder / "config.yaml").exists():
        return [*exe, "--resume", str(folder)]
    folder.mkdir(parents=True, exist_ok=True)
    cfg = build_config(base, run.override_list())
    atomic_write_text(folder / "sweep_config.yaml", cfg.to_yaml())
    return [*exe, "--config", str(folder / "sweep_config.yaml"), "--out", str(folder)]


MAX_SEED, MAX_SEEDS = 2**31 - 1, 1000  # torch seeds are 64-bit; 1000 runs is past any sweep on one machine


def parse_seeds(text: str) -> list[int]:
    """'0-4' → [0, 1, 2, 3, 4]; '0,2,7' → [0, 2, 7]; '3' → [3]. Raises ConfigError naming what is wrong
    (before a range is expanded: '0-10000000000' is an error, not a list that fills the memory)."""
    seeds: list[int] = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m[2] is not None and int(m[2]) < int(m[1])):
            raise ConfigError(f"--seeds {text!r}: expected seeds like 0-4 or 0,2,7 (non-negative, ranges low-high)")
        low, high = int(m[1]), int(m[2] or m[1])
        if high > MAX_SEED or len(seeds) + high - low + 1 > MAX_SEEDS:
            raise ConfigError(f"--seeds {text!r}: at most {MAX_SEEDS} seeds, each at most {MAX_SEED}")
        seeds += range(low, high + 1)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed repeats")
    return seeds


def run_seeds(cfg, seeds: str | list[int], out: str | Path | None = None, *, jobs: int = 1,
              echo=print) -> list[Path]:
    """Run config `cfg` once per seed, one folder each (OUT/seed-N, resumable), as a sweep; returns the folders."""
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else list(seeds)
    base = yaml.safe_load(cfg.to_yaml())
    runs = [SweepRun(name=f"seed-{s}", overrides={"seed": s}) for s in seeds]
    root = Path(out) if out else Path("runs") / time.strftime("seeds-%Y%m%d-%H%M%S")
    return run_runs(f"seeds {','.join(map(str, seeds))}", base, runs, root, source="--seeds", jobs=jobs,
                    echo=echo)


def run_sweep(path: str | Path, out: str | Path | None = None, *, jobs: int = 1, only: int | None = None,
              echo=print) -> list[Path]:
    """Run (or resume) every run of the sweep, at most `jobs` at a time; returns the run folders."""
    name, base, runs = load_sweep(path)
    root = Path(out) if out else Path("runs") / f"sweep-{name}"
    return run_runs(name, base, runs, root, source=str(path), jobs=jobs, only=only, echo=echo)


def run_runs(name: str, base: dict, runs: list[SweepRun], root: Path, *, source: str, jobs: int = 1,
             only: int | None = None, report: bool = True, echo=print) -> list[Path]:
    """Run (or resume) `runs` as separate processes under `root`, at most `jobs` at a time; without `report`,
    no audit or report.html (what reads only metrics and evaluation records needs neither)."""
    repeated = sorted({r.name for r in runs if sum(q.name == r.name for q in runs) > 1})
    if repeated:  # two processes would train into one folder
        raise ValueError(f"{name}: run name(s) {', '.join(repeated)} repeat; each run needs its own folder")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.json", json.dumps(
        {"name": name, "file": source, "runs": [{"name": r.name, "overrides": r.overrides} for r in runs]},
        indent=2))
    selected = list(enumerate(runs)) if only is None else [(only, runs[only])]
    folders = [root / r.name for _, r in selected]
    todo = [(i, r) for i, r in selected if not _finished(root / r.name)]
    echo(f"sweep {name}: {len(selected)} runs in {root} ({len(selected) - len(todo)} finished already), "
         f"{jobs} at a time")
    running: list[tuple[str, subprocess.Popen, float]] = []
    failed = []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2)
                                                                                          // max(1, jobs))))}
    while todo or running:
        while todo and len(running) < jobs:
            _i, r = todo.pop(0)
            folder = root / r.name
            log = open(folder.parent / f"{r.name}.log", "a")  # noqa: SIM115 (closed when the process ends)
            proc = subprocess.Popen(_command(folder, base, r, report=report), stdout=log, stderr=log, env=env)
            running.append((r.name, proc, time.time()))
            echo(f"  started {r.name}")
        time.sleep(0.5)
        for item in list(running):
            rname, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                ok = proc.returncode == 0 and _finished(root / rname)
                echo(f"  {'finished' if ok else 'FAILED'} {rname} in {time.time() - t0:.0f} s"
                     + ("" if ok else f" (see {root / (rname + '.log')})"))
                if not ok:
                    failed.append(rname)
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed: {', '.join(failed)}; rerun the sweep to resume them")
    return folders

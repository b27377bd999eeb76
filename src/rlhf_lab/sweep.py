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
from rlhf_lab.runfolder import STEPS, RunFolder, atomic_write_text, copy_steps


@dataclass
class SweepRun:
    name: str
    overrides: dict = field(default_factory=dict)
    until: str = STEPS[-1]  # the last step it makes: the steps several runs share stop early, without a report
    start_from: str | None = None  # a run of the same list whose finished steps this one copies before it starts

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


def _finished(folder: Path, until: str = STEPS[-1]) -> bool:
    return (folder / "state.json").exists() and until in RunFolder(folder).state().get("done", {})


def _command(folder: Path, base: dict, run: SweepRun, *, report: bool = True) -> list[str]:
    exe = [sys.executable, "-m", "rlhf_lab.cli", "run", "--quiet", *(() if report else ("--no-report",)),
           *(("--until", run.until) if run.until != STEPS[-1] else ())]
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
    """Run (or resume) every run of the sweep, at most `jobs` at a time; returns the run folders. The steps
    that runs of one seed have in common (e.g. SFT and samples when they differ only in who labels) are made
    once, in OUT/shared/ (sharing.py); not with `only` (one run, on its own)."""
    from rlhf_lab.sharing import run_shared

    name, base, runs = load_sweep(path)
    root = Path(out) if out else Path("runs") / f"sweep-{name}"
    if only is not None:  # the index is into the sweep's own list of runs
        return run_runs(name, base, runs, root, source=str(path), jobs=jobs, only=only, echo=echo)
    return run_shared(name, base, runs, root, source=str(path), jobs=jobs, echo=echo)


def run_runs(name: str, base: dict, runs: list[SweepRun], root: Path, *, source: str, jobs: int = 1,
             only: int | None = None, report: bool = True, echo=print) -> list[Path]:
    """Run (or resume) `runs` as separate processes under `root`, at most `jobs` at a time; without `report`,
    no audit or report.html (what reads only metrics and evaluation records needs neither). A run with
    `start_from` waits for that run to finish its steps, then starts from a copy of them (runfolder.copy_steps)
    unless its folder exists already. Returns the folders of the runs that go to the end (not `until` a step)."""
    repeated = sorted({r.name for r in runs if sum(q.name == r.name for q in runs) > 1})
    if repeated:  # two processes would train into one folder
        raise ValueError(f"{name}: run name(s) {', '.join(repeated)} repeat; each run needs its own folder")
    by_name = {r.name: r for r in runs}
    unknown = sorted({r.start_from for r in runs if r.start_from and r.start_from not in by_name})
    if unknown:
        raise ValueError(f"{name}: runs start from {', '.join(unknown)}, which are not runs of this list")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.json", json.dumps(
        {"name": name, "file": source, "runs": [{"name": r.name, "overrides": r.overrides,
                                                 **({"until": r.until} if r.until != STEPS[-1] else {}),
                                                 **({"start_from": r.start_from} if r.start_from else {})}
                                                for r in runs]}, indent=2))
    selected = list(enumerate(runs)) if only is None else [(only, runs[only])]
    whole = [r for _, r in selected if r.until == STEPS[-1]]
    todo = [r for _, r in selected if not _finished(root / r.name, r.until)]
    parts = len(selected) - len(whole)
    echo(f"sweep {name}: {len(whole)} runs{f' and {parts} shared part' + 's' * (parts > 1) if parts else ''} in {root} "
         f"({len(selected) - len(todo)} finished already), {jobs} at a time")
    running: list[tuple[str, subprocess.Popen, float]] = []
    failed: list[str] = []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2)
                                                                                          // max(1, jobs))))}

    def cannot_start(r: SweepRun) -> bool:  # its folder is to be copied from a run that did not finish its steps
        return bool(r.start_from) and not (root / r.name / "config.yaml").exists() and \
            not _finished(root / r.start_from, by_name[r.start_from].until)

    while todo or running:
        pending = {r.name for r in todo} | {n for n, _, _ in running}
        for r in list(todo):
            if len(running) >= jobs:
                break
            if r.start_from in pending and not (root / r.name / "config.yaml").exists():
                continue  # until its process has ended, not only its steps
            todo.remove(r)
            folder = root / r.name
            if cannot_start(r):  # the run it starts from failed, or was not selected
                echo(f"  FAILED {r.name}: {r.start_from} did not finish its steps")
                failed.append(r.name)
                continue
            try:
                _start_from(root, base, r, echo=echo)
            except (ValueError, OSError) as e:
                echo(f"  FAILED {r.name}: {e}")
                failed.append(r.name)
                continue
            folder.parent.mkdir(parents=True, exist_ok=True)
            log = open(root / f"{r.name}.log", "a")  # noqa: SIM115 (closed when the process ends)
            proc = subprocess.Popen(_command(folder, base, r, report=report), stdout=log, stderr=log, env=env)
            running.append((r.name, proc, time.time()))
            echo(f"  started {r.name}")
        time.sleep(0.5)
        for item in list(running):
            rname, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                ok = proc.returncode == 0 and _finished(root / rname, by_name[rname].until)
                echo(f"  {'finished' if ok else 'FAILED'} {rname} in {time.time() - t0:.0f} s"
                     + ("" if ok else f" (see {root / (rname + '.log')})"))
                if not ok:
                    failed.append(rname)
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed: {', '.join(failed)}; rerun the sweep to resume them")
    return [root / r.name for r in whole]


def _start_from(root: Path, base: dict, run: SweepRun, *, echo) -> None:
    """Make the folder of a run that starts from another's finished steps (not when it exists already)."""
    folder = root / run.name
    if not run.start_from or (folder / "config.yaml").exists():
        return
    text = build_config(base, run.override_list()).to_yaml()
    copy_steps(root / run.start_from, folder, config_yaml=text, files={"sweep_config.yaml": text})
    echo(f"  {run.name}: {', '.join(RunFolder(folder).state()['done'])} copied from {run.start_from}")

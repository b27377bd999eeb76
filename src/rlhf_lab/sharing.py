"""The steps that runs of one seed have in common, made once (for `rlhf-lab reproduce` and the early-warning
scoreboard).

The runs of the findings differ mostly in who labels, which reward model and which algorithm, so most of a
seed's runs make the same SFT policy, and many the same samples, labels or reward model; the scoreboard's
settings differ only in who labels. What a step's outputs
are made from is `runfolder.step_inputs` (the config sections it and the steps before it read); runs that
agree on it for a step make the same outputs up to that step. Each step shared by two runs or more is made
once, by a *shared part*: a run that stops after it (`run --until STEP`, in OUT/shared/, named by the step
and a hash of what it is made from, so a changed config never reuses it), itself starting from the shared part
before it. Each run then starts from a copy of the deepest shared part it has (runfolder.copy_steps) and
makes only its own steps.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml

from rlhf_lab.config import build_config
from rlhf_lab.runfolder import STEPS, step_inputs
from rlhf_lab.sweep import SweepRun, run_runs

SHARED = "shared"  # the folder of the shared parts, under the reproduction's folder


def _key(config: dict, step: str) -> str:
    return hashlib.sha1(json.dumps(step_inputs(config, step), sort_keys=True).encode()).hexdigest()[:10]


def share(runs: list[SweepRun], *, base: dict | None = None,
          started: set[str] = frozenset()) -> tuple[list[SweepRun], list[str]]:
    """(the shared parts, then `runs` with `start_from` set where they have one; lines that say, per seed, which
    runs share which steps and how many step runs that saves). Each run's config is its overrides over `base`
    (the sweep's base config; reproduce's runs have none). Runs in `started` (their folder exists: they resume
    on their own) and runs that log to experiment trackers (whose records would miss the copied steps) take no
    part."""
    configs = {r.name: yaml.safe_load(build_config(base or {}, r.override_list()).to_yaml()) for r in runs}
    members = [r for r in runs if r.name not in started and not configs[r.name]["logging"]["report_to"]]
    levels = STEPS[:-1]  # runs that agree up to the last step are the same run
    groups: dict[tuple[int, str], list[str]] = {}
    for r in members:
        for depth, step in enumerate(levels):
            groups.setdefault((depth, _key(configs[r.name], step)), []).append(r.name)

    def group(name: str, depth: int) -> list[str]:
        return groups[(depth, _key(configs[name], levels[depth]))]

    # a shared part at each depth where two runs or more agree, unless the same runs still agree one step further
    kept = {node: names for node, names in groups.items() if len(names) > 1 and
            not (node[0] + 1 < len(levels) and group(names[0], node[0] + 1) == names)}
    by_name = {r.name: r for r in runs}
    parts: dict[tuple[int, str], SweepRun] = {}
    for (depth, key), names in sorted(kept.items(), key=lambda kv: (configs[kv[1][0]]["seed"], kv[0][0])):
        step = levels[depth]
        above = [d for d in range(depth) if (d, _key(configs[names[0]], levels[d])) in kept]
        parts[(depth, key)] = SweepRun(
            name=f"{SHARED}/{step}-{key[:8]}_seed-{configs[names[0]]['seed']}",
            overrides=by_name[names[0]].overrides, until=step,
            start_from=parts[(above[-1], _key(configs[names[0]], levels[above[-1]]))].name if above else None)
    out = []
    for r in runs:
        mine = [node for node in parts if r.name in kept[node]]
        deepest = max(mine, default=None)
        out.append(SweepRun(name=r.name, overrides=r.overrides, until=r.until,
                            start_from=parts[deepest].name if deepest else r.start_from))
    # the runs that make the most steps themselves start first, so that a long one does not start last
    until = {p.name: STEPS.index(p.until) for p in parts.values()}
    out.sort(key=lambda r: until.get(r.start_from, -1))
    return [*parts.values(), *out], _describe(list(parts.values()), out, kept, parts)


def run_shared(name: str, base: dict, runs: list[SweepRun], root: Path, *, echo=print, **kwargs) -> list[Path]:
    """`sweep.run_runs` of `runs` under `root` with their common steps made once: runs whose folder exists
    already resume on their own; says per seed what is shared. kwargs go to run_runs."""
    shared, lines = share(runs, base=base, started={r.name for r in runs if (root / r.name / "config.yaml").exists()})
    for line in lines:
        echo(line)
    return run_runs(name, base, shared, root, echo=echo, **kwargs)


def _describe(parts: list[SweepRun], runs: list[SweepRun], kept: dict, by_node: dict) -> list[str]:
    """Per seed: each shared part, the steps it makes and the runs that start from it; then the step runs saved."""
    names = {p.name: kept[node] for node, p in by_node.items()}
    made: dict[str, list[str]] = {}  # seed → the steps each process makes, one entry per step run
    lines = []
    everything = {r.name: r for r in [*parts, *runs]}

    def first(r: SweepRun) -> int:  # index of the first step r makes itself
        return STEPS.index(everything[r.start_from].until) + 1 if r.start_from else 0

    def seed_of(r: SweepRun) -> str:
        return str(r.overrides.get("seed", 0))

    for r in [*parts, *runs]:
        made.setdefault(seed_of(r), []).extend(STEPS[first(r):STEPS.index(r.until) + 1])
    for seed in made:
        mine = [r for r in runs if seed_of(r) == seed]
        for p in (p for p in parts if seed_of(p) == seed):
            shown = ", ".join(re.sub(rf"_seed-{seed}$", "", n) for n in names[p.name])
            lines.append(f"  seed {seed}: {', '.join(STEPS[first(p):STEPS.index(p.until) + 1])} made once "
                         f"({p.name}) for {shown}")
        saved = [(s, len(mine) - made[seed].count(s)) for s in STEPS if len(mine) > made[seed].count(s)]
        if saved:
            lines.append(f"  seed {seed}: {len(mine)} runs; sharing saves "
                         + ", ".join(f"{n} {s} run{'s' * (n > 1)}" for s, n in saved))
    return lines

"""`rlhf-lab reproduce`: the runs of the chosen findings × seeds through the sweep machinery (one process and
one folder per run, resumable: a finished run is not run again), then each finding's measures over the seeds
and their verdicts, written as reproductions.md and reproductions.html (tables.py).

    OUT/default_seed-0/ …       one run folder per run and seed (a run shared by findings is trained once)
    OUT/shared/sft-<hash>_seed-0/ …  the steps several runs of a seed have in common, made once (rlhf_lab.sharing)
    OUT/reproductions.md|html   one row per finding, its control, the verdicts, links to every run's report
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rlhf_lab.config import POLICY_CONFIGS, ConfigError, build_config, parse_override
from rlhf_lab.reproduce import verdict as V
from rlhf_lab.reproduce.findings import BY_NAME, FINDINGS, Finding
from rlhf_lab.runfolder import RunFolder
from rlhf_lab.sharing import run_shared
from rlhf_lab.sweep import SweepRun, load_sweep, parse_seeds

FINDINGS_DIR = Path(__file__).resolve().parents[3] / "examples" / "reproductions"


def select(names: list[str] | None) -> list[Finding]:
    """The findings named (all when none), in the registry's order; an unknown name is a ConfigError."""
    unknown = [n for n in names or [] if n not in BY_NAME]
    if unknown:
        raise ConfigError(f"unknown finding {', '.join(map(repr, unknown))}; known: {', '.join(BY_NAME)} "
                          "(`rlhf-lab reproduce --list`)")
    return [f for f in FINDINGS if not names or f.name in names]


def finding_runs(findings: list[Finding], folder: Path = FINDINGS_DIR) -> dict[str, dict]:
    """run name → its overrides, from each finding's sweep file (FOLDER/<name>.yaml). A file lists exactly
    the runs its finding reads, and a run name means the same overrides in every file."""
    runs: dict[str, tuple[dict, str]] = {}
    for f in findings:
        path = folder / f"{f.name}.yaml"
        if not path.exists():
            raise FileNotFoundError(f"{path}: the runs of finding {f.name!r} are missing")
        _name, base, listed = load_sweep(path)
        if base:
            raise ConfigError(f"{path}: a reproduction has no base config: every finding runs in the same world")
        names = {r.name for r in listed}
        if names != set(f.runs()):
            raise ConfigError(f"{path}: lists runs {sorted(names)} but finding {f.name!r} reads {sorted(f.runs())}")
        for r in listed:
            seen = runs.setdefault(r.name, (r.overrides, str(path)))
            if seen[0] != r.overrides:
                raise ConfigError(f"{path}: run {r.name!r} differs from the run of that name in {seen[1]}")
    return {name: overrides for name, (overrides, _) in runs.items()}


def describe(f: Finding) -> str:
    """Two lines for `--list`: the finding and the runs it reads with the cause on and off."""
    on = [r for r in f.runs() if r not in f.control.values()]
    return (f"{f.name}\t{f.title} — {f.paper}\n\tcause on: {', '.join(on)}; control ({f.control_text}): "
            f"{', '.join(f.control.values())}")


def folder_name(run: str, seed: int) -> str:
    return f"{run}_seed-{seed}"


def _set_overrides(sets: list[str]) -> dict:
    """--set items applied to every run ('sft.epochs=2' → {"sft.epochs": 2}); a finding's own keys win."""
    return {".".join(parts): value for parts, value in map(parse_override, sets)}


def _applies(key: str, overrides: dict, common: dict) -> bool:
    """A --set `policy.*` key applies only to the runs whose algorithm has it (policy.updates means nothing to
    best-of-n); every other key applies to every run."""
    section, _, field = key.partition(".")
    if section != "policy" or field == "algorithm":
        return True
    algorithm = overrides.get("policy.algorithm", common.get("policy.algorithm", "ppo"))
    return algorithm not in POLICY_CONFIGS or field in POLICY_CONFIGS[algorithm].model_fields


def plan(findings: list[Finding], seeds: list[int], sets: list[str] | None = None,
         folder: Path = FINDINGS_DIR, *, echo=None) -> list[SweepRun]:
    """Every (run, seed) the findings need, each validated now so a typo fails before any run."""
    common = _set_overrides(sets or [])
    out = []
    for seed in seeds:
        for name, overrides in finding_runs(findings, folder).items():
            skipped = [k for k in common if not _applies(k, overrides, common)]
            if skipped and echo and seed == seeds[0]:
                echo(f"  --set {', '.join(skipped)}: not a key of run {name!r}'s algorithm, not applied there")
            mine = {k: v for k, v in common.items() if k not in skipped}
            run = SweepRun(name=folder_name(name, seed), overrides={**mine, **overrides, "seed": seed})
            try:
                build_config({}, run.override_list())
            except ConfigError as e:
                raise ConfigError(f"run {run.name!r}: {e}") from None
            out.append(run)
    return out


def evaluate(finding: Finding, audits: Callable[[str, int], dict], seeds: list[int]) -> dict:
    """The finding's measures over the seeds: {"measures": [{"measure", "summary", "verdict"}], "control":
    {"summary", "verdict"}}. `audits(run, seed)` returns that run's audit.json."""
    def per_seed(fn, on: dict[str, str]) -> list[float | None]:
        return [fn({role: audits(run, s) for role, run in on.items()}) for s in seeds]

    rows = []
    for ms in finding.measures:
        values = per_seed(ms.fn, ms.on)
        rows.append({"measure": ms, "summary": V.summarise(values, ms.expect),
                     "verdict": None if ms.expect is None else V.verdict(values, ms.expect)})
    head = finding.headline
    control = per_seed(head.fn, finding.control)
    return {"finding": finding, "measures": rows, "seeds": seeds,
            "control": {"summary": V.summarise(control, head.expect),
                        "verdict": V.control_verdict(control, head.expect, finding=rows[0]["verdict"])}}


def reproduce(names: list[str] | None, seeds: str | list[int], out: str | Path | None = None, *, jobs: int = 1,
              sets: list[str] | None = None, echo=print, folder: Path = FINDINGS_DIR) -> tuple[Path, Path]:
    """Run (or resume) the findings' runs for every seed, then write OUT/reproductions.md and .html."""
    from rlhf_lab.audit.report import load_audit
    from rlhf_lab.reproduce.tables import write_tables

    findings = select(names)
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else list(seeds)
    runs = plan(findings, seeds, sets, folder, echo=echo)
    root = Path(out) if out else Path("runs") / "reproduce"
    echo(f"reproduce: {len(findings)} finding(s), {len(runs) // len(seeds)} distinct run(s) × {len(seeds)} seed(s)")
    t0 = time.time()
    run_shared("reproduce " + ",".join(f.name for f in findings), {}, runs, root, source=str(folder), jobs=jobs,
               echo=echo)
    cache: dict[tuple[str, int], dict] = {}

    def audits(run: str, seed: int) -> dict:
        if (run, seed) not in cache:
            audit = load_audit(RunFolder(root / folder_name(run, seed)))
            if audit is None:
                raise FileNotFoundError(f"{root / folder_name(run, seed)}: no audit.json and no trained policy")
            cache[(run, seed)] = audit
        return cache[(run, seed)]

    results = [evaluate(f, audits, seeds) for f in findings]
    md, html = write_tables(results, root, seconds=time.time() - t0, sets=sets or [])
    echo(f"Reproductions: {md}\n              {html}")
    return md, html

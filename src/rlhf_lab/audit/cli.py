"""The audit's commands, registered on the `rlhf-lab` app by `rlhf_lab.cli`:

    rlhf-lab audit DIR [--checkpoint STEP]     measure every tension, write audit.json and report.html
    rlhf-lab audit --policy P [--reference R] [--reward RM] --out DIR   the same for any two models
    rlhf-lab report DIR                        rebuild report.html (auditing first if there is no audit.json)
    rlhf-lab compare DIR1 DIR2 … [--out FILE]  one report with several runs side by side
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from rlhf_lab.config import ConfigError

RunDir = Annotated[Path, typer.Argument(help="Run folder.", file_okay=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _check_run(run_dir: Path) -> None:
    if not (run_dir / "config.yaml").exists():
        _fail(f"{run_dir}: not a run folder (no config.yaml)")


def _guard(fn, *args, **kwargs):
    if os.environ.get("RLHF_LAB_DEBUG"):
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as e:
        _fail(str(e).strip("'\""))


def _headlines(audit: dict) -> None:
    from rich.table import Table

    from rlhf_lab.audit import page, prose
    from rlhf_lab.audit.report import HEADLINES, mark_floor_effects
    from rlhf_lab.ui import console

    audit, collapsed = mark_floor_effects(audit)  # the terminal reads a collapse as the report does
    if collapsed:
        console.print("[bold red]The policy's answers collapsed (all, or those to some kinds of prompt):[/bold red] "
                      + "; ".join(collapsed) + ". Rates that fell with it are marked floor effect, not better.")
    table = Table(title="Audit: SFT → after RLHF (95 % CI of the change)")
    for col in ("tension", "metric", "SFT", "after RLHF", "change", ""):
        table.add_column(col)
    for tension, key, title in HEADLINES:
        m = audit["tensions"].get(tension, {}).get("metrics", {}).get(key)
        if not m or "sft" not in m:
            continue
        kind = m.get("kind", "mean")
        v = prose.verdict(m)
        colour = {"worse": "red", "better": "green", "noise": "dim", "changed": "blue", "none": "dim",
                  "floor": "yellow"}[v]
        table.add_row(tension, title, prose.num(m["sft"]["value"], kind), prose.num(m["policy"]["value"], kind),
                      prose.change_interval(m.get("change"), kind), f"[{colour}]{page.BADGE_TEXT[v]}[/{colour}]")
    console.print(table)


def audit(
    run_dir: Annotated[Path | None, typer.Argument(help="Run folder (or give --policy instead).",
                                                   file_okay=False)] = None,
    checkpoint: Annotated[int | None, typer.Option(
        "--checkpoint", metavar="STEP",
        help="Audit the policy saved at this update (checkpoints/step_NNNNN) instead of the final one.")] = None,
    policy: Annotated[str | None, typer.Option(
        "--policy", metavar="PATH", help="Audit any causal LM (folder, .gguf or packaged name) instead of a run; "
        "needs --out.")] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", metavar="PATH", help="With --policy: the model it is compared against (default: itself).")
    ] = None,
    reward: Annotated[str | None, typer.Option(
        "--reward", metavar="PATH", help="With --policy: an rlhf-lab reward model folder for the proxy reward.")
    ] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="DIR", file_okay=False, help="With --policy: where audit.json and report.html go.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="With --policy: the prompts' and sampling seed.")] = 0,
    reference_seed: Annotated[int | None, typer.Option(
        "--reference-seed", help="With --policy: sample the reference with its own seed (default: --seed, paired).")
    ] = None,
    n_prompts: Annotated[int, typer.Option("--n-prompts", min=8, help="With --policy: held-out prompts; the probe "
                                           "sets scale with it (256 = the full audit).")] = 64,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="With --policy: longest answer.")] = 64,
    quiet: QuietOpt = False,
) -> None:
    """Measure what RLHF did — over-optimisation, sycophancy, diversity, flattening, deception, harm — SFT vs
    the trained policy, with 95 % intervals; write audit.json and report.html. With --policy, audit any two
    models (a policy against a reference) in the world rendered as plain English."""
    from rlhf_lab.audit import run_audit, write_report
    from rlhf_lab.ui import info, set_quiet

    set_quiet(quiet)
    if policy is not None:
        if run_dir is not None or checkpoint is not None:
            _fail("give either a run folder or --policy, not both")
        if out is None:
            _fail("--policy needs --out DIR (where audit.json and report.html go)")
        from rlhf_lab.audit.external import audit_models

        result = _guard(audit_models, policy=policy, reference=reference, reward=reward, out=out, seed=seed,
                        reference_seed=reference_seed, n_prompts=n_prompts, max_new_tokens=max_new_tokens)
        if not quiet:
            _headlines(result)
        info(f"Audit: {result['seconds']:.0f} s → {out / 'audit.json'}\nReport: {out / 'report.html'}")
        return
    if run_dir is None:
        _fail("give a run folder, or --policy PATH --out DIR to audit any model")
    if reference is not None or reward is not None or out is not None:
        _fail("--reference, --reward and --out go with --policy")
    _check_run(run_dir)
    from rlhf_lab import trackers
    from rlhf_lab.config import load_config

    cfg = _guard(load_config, run_dir / "config.yaml")
    _guard(trackers.check_available, cfg.logging.report_to)
    with trackers.session(run_dir, cfg):  # the run's trackers get audit/… (at step N with --checkpoint N)
        result = _guard(run_audit, run_dir, checkpoint)
    path = _guard(write_report, run_dir, audit=result)
    if not quiet:
        _headlines(result)
    info(f"Audit: {result['seconds']:.0f} s → {run_dir / 'audit.json'}\nReport: {path}")


def report(run_dir: RunDir, quiet: QuietOpt = False) -> None:
    """Rebuild report.html from the run folder (auditing first when there is no audit.json yet)."""
    from rlhf_lab.audit import write_report
    from rlhf_lab.ui import info, set_quiet

    set_quiet(quiet)
    _check_run(run_dir)
    info(f"Report: {_guard(write_report, run_dir)}")


def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Two or more run folders.", file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.", dir_okay=False)] = Path(
        "comparison.html"),
    quiet: QuietOpt = False,
) -> None:
    """One report that puts several runs side by side: what differs in their choices, and every tension."""
    from rlhf_lab.audit import write_comparison
    from rlhf_lab.ui import info, set_quiet

    set_quiet(quiet)
    if len(run_dirs) < 2:
        _fail("compare needs at least two run folders")
    for d in run_dirs:
        _check_run(d)
    info(f"Comparison: {_guard(write_comparison, run_dirs, out)}")

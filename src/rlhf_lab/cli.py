"""The `rlhf-lab` command: thin — parse arguments, call the pipeline or one step."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from rlhf_lab.config import ConfigError, field_docs, load_config

app = typer.Typer(
    help="RLHF end to end — SFT, sampling, labels, reward model, policy optimisation — and an audit of what "
    "it does to a model.\n\nStart with `rlhf-lab run`: the whole pipeline on the built-in world in about three "
    "minutes on a 2-core CPU (158–176 s measured 2026-12-01; benchmarks/README.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Show the resolved config or the documentation of every key.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _mount_annotate() -> None:
    from rlhf_lab.annotate.cli import annotate_app

    app.add_typer(annotate_app, name="annotate",
                  help="Step 2 with people: the annotation web app (serve, import, export).")


_mount_annotate()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file with config sections.",
                                                 exists=False, dir_okay=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="SECTION.KEY=VALUE",
    help="Override one config key (repeatable), e.g. --set policy.kl_coef=0.1")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ReportToOpt = Annotated[list[str] | None, typer.Option(
    "--report-to", metavar="TRACKER", help="Also log the metrics to tensorboard, wandb or mlflow (repeatable or "
    "comma-separated; offline, under RUN/trackers/; sets logging.report_to).")]
RunDir = Annotated[Path, typer.Argument(help="Run folder.", file_okay=False)]


def _fail(msg: str, code: int = 1) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs):
    """Run fn; turn the errors a user can fix into one line and a non-zero exit (RLHF_LAB_DEBUG=1 shows all)."""
    if os.environ.get("RLHF_LAB_DEBUG"):
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except ConfigError as e:
        _fail(str(e), 2)
    except (FileNotFoundError, ValueError, KeyError) as e:
        _fail(str(e).strip("'\""), 1)
    except KeyboardInterrupt:
        _fail("interrupted; `rlhf-lab run --resume DIR` continues where it stopped", 130)


def _runs(fn, *args, **kwargs):
    """`_guard` for a set of runs in subprocesses: runs that failed (a RuntimeError naming them and their logs)
    are one line too."""
    try:
        return _guard(fn, *args, **kwargs)
    except typer.Exit:  # a RuntimeError too: _guard's one-line error, already said
        raise
    except RuntimeError as e:
        _fail(str(e))


def _config(config: Path | None, sets: list[str] | None):
    return _guard(load_config, config, sets or [])


def _report_to(names: list[str] | None) -> list[str]:
    """--report-to as a --set override of logging.report_to (none when not given)."""
    if not names:
        return []
    chosen = [n.strip() for item in names for n in item.split(",") if n.strip()]
    return [f"logging.report_to=[{', '.join(chosen)}]"]


def _quiet(q: bool) -> None:
    from rlhf_lab.ui import set_quiet

    set_quiet(q)


@app.command()
def run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default runs/<timestamp>).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue an interrupted run in this folder.",
                                                file_okay=False)] = None,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", metavar="SEEDS", help="Run once per seed (e.g. 0-4 or 0,2,7), each in OUT/seed-N as its own "
        "process, then compare them: every tension as a mean over the seeds, and on how many it held. Rerun "
        "the same command to resume.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="With --seeds: runs at once, each its own "
                                      "process.")] = 1,
    quiet: QuietOpt = False,
    report_to: ReportToOpt = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Audit the run and write report.html at "
                                         "the end (--no-report: stop after evaluation).")] = True,
    until: Annotated[str, typer.Option("--until", metavar="STEP", help="Stop after this step (sft, sample, label, "
                                       "reward, policy), without a report; resume later runs the rest.")]
    = "evaluate",
) -> None:
    """Run the whole pipeline: SFT → sample → label → reward model → policy → evaluation → report."""
    _quiet(quiet)
    if resume is not None and (config is not None or set_ or seeds):
        _fail("--resume continues with the run's saved config; do not pass --config/--set/--seeds with it", 2)
    cfg = None if resume else _config(config, [*(set_ or []), *_report_to(report_to)])
    if resume is not None and report_to:
        # the saved config with other trackers: the same experiment, so it continues where it stopped
        cfg, resume, out = _config(resume / "config.yaml", _report_to(report_to)), None, resume
    if seeds is not None:
        if until != "evaluate":
            _fail("--until stops one run; it does not combine with --seeds", 2)
        from rlhf_lab.sweep import run_seeds

        folders = _runs(run_seeds, cfg, seeds, out, jobs=jobs, echo=typer.echo)
        _guard(_compare, folders, folders[0].parent / "compare.html")
        return
    from rlhf_lab import pipeline
    from rlhf_lab.steps.label import NeedsHumanLabels

    t0 = time.time()
    try:
        folder = _guard(pipeline.run, cfg, resume or out, resume=resume is not None, report=report, until=until)
    except NeedsHumanLabels as e:
        typer.echo(str(e))
        raise typer.Exit(0) from None
    _summary(folder, time.time() - t0)


def _summary(folder, seconds: float) -> None:
    import json

    from rich.table import Table

    from rlhf_lab.ui import console

    table = Table(title=f"rlhf-lab run — {folder.root}", show_header=True)
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    metrics = {}
    for rec in folder.metrics():
        metrics.update(rec)
    summary_path = folder / "eval" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    results = {
        "sft": f"held-out loss {metrics.get('sft/eval_loss', float('nan')):.3f}",
        "sample": "",
        "label": f"{metrics.get('label/labels', 0)} labels, {metrics.get('label/preferences', 0)} preferences",
        "reward": f"held-out accuracy {metrics.get('reward/accuracy', float('nan')):.3f}",
        "policy": f"KL {metrics.get('eval/kl', float('nan')):.2f} nats",
        "evaluate": "",
    }
    if summary:
        s, p = summary["sft"], summary["policy"]
        results["evaluate"] = (f"proxy {s['sft/proxy_reward']:+.2f} → {p['policy/proxy_reward']:+.2f}, "
                               f"gold {s['sft/gold_utility']:+.2f} → {p['policy/gold_utility']:+.2f}")
    for name, info in folder.state().get("done", {}).items():
        table.add_row(name, f"{info.get('seconds', 0):.1f}", results.get(name, ""))
    console.print(table)
    report = folder / "report.html"
    console.print(f"Total {seconds:.0f} s." + (f" Report: [bold]{report}[/bold]" if report.exists() else ""))


def _step_command(name: str, doc: str):
    def command(run_dir: RunDir, config: ConfigOpt = None, set_: SetOpt = None, quiet: QuietOpt = False,
                report_to: ReportToOpt = None) -> None:
        _quiet(quiet)
        from rlhf_lab import pipeline

        set_ = [*(set_ or []), *_report_to(report_to)]
        saved = run_dir / "config.yaml"
        cfg = None
        if config is not None or set_ or not saved.exists():
            # --config replaces the run's saved config; --set changes it (or the defaults in a new folder)
            cfg = _config(config if config is not None else (saved if saved.exists() else None), set_)
        _guard(pipeline.step, name, run_dir, cfg)

    command.__doc__ = doc
    command.__name__ = name
    return command


for _name, _doc in (
    ("sft", "Step 0: supervised fine-tuning on the world's demonstrations."),
    ("sample", "Step 1: sample k completions per prompt from the SFT model and form pairs."),
    ("label", "Step 2: label the pairs (simulated population, web app, or an imported file)."),
    ("reward", "Step 3: train the reward model (Bradley–Terry) and normalise its scores."),
    ("policy", "Step 4: optimise the policy against the reward model (policy.algorithm)."),
    ("evaluate", "Compare the SFT policy and the trained policy on held-out prompts."),
):
    app.command(name=_name)(_step_command(_name, _doc))


def _mount_audit() -> None:
    from rlhf_lab.audit import cli as audit_cli

    app.command("audit")(audit_cli.audit)
    app.command("report")(audit_cli.report)
    app.command("compare")(audit_cli.compare)


_mount_audit()


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep file (YAML): base config, grid and/or list of runs.",
                                         dir_okay=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the runs (default runs/sweep-NAME).")]
    = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs at once (each is its own process).")] = 1,
    only: Annotated[int | None, typer.Option("--only", min=0, help="Run only run number K (0-based), e.g. "
                                             "$SLURM_ARRAY_TASK_ID in a job array.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="Print the expanded runs and exit.")] = False,
) -> None:
    """Run a grid or list of config overrides, one run folder each (resumable), then compare them. Steps that
    runs of one seed have in common (e.g. SFT and samples, when runs differ only in who labels) are made once,
    in OUT/shared/, and copied into each run."""
    from rlhf_lab.sweep import load_sweep, run_sweep

    _name, _base, runs = _guard(load_sweep, file)
    if list_:
        for i, r in enumerate(runs):
            typer.echo(f"{i}\t{r.name}\t{' '.join('--set ' + o for o in r.override_list())}")
        return
    folders = _runs(run_sweep, file, out, jobs=jobs, only=only, echo=typer.echo)
    if only is None:
        root = folders[0].parent
        _guard(_compare, folders, root / "compare.html")


@app.command(help="Reproduce published findings about RLHF, each with its cause switched on and off "
             "(examples/reproductions/, docs/reproductions.md).\n\nRuns each finding's runs for every seed, one "
             "process each (rerun the same command to resume; a run several findings read is trained once), then "
             "writes OUT/reproductions.md and OUT/reproductions.html: per finding the paper's claim, our "
             "measurement with a 95 % interval over seeds, the same with the cause switched off, and the verdicts. "
             "All nine findings are 11 default-size runs per seed; the steps they have in common are made once "
             "(OUT/shared/: 2 SFT policies per seed, not 11) and copied into each run.")
def reproduce(
    names: Annotated[list[str] | None, typer.Argument(metavar="[NAME]...", help="Findings to reproduce (default: "
                                                      "all; `--list` names them).")] = None,
    seeds: Annotated[str, typer.Option("--seeds", metavar="SEEDS", help="Seeds of every run, e.g. 0-2 or 0,3,5; "
                                       "a verdict needs the interval over them.")] = "0-2",
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs at once (each is its own process).")] = 2,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the runs and the tables (default "
                                             "runs/reproduce).")] = None,
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="One seed (the first of --seeds): a direction, no "
                                        "verdict.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="Show the findings and the runs each reads, and exit.")]
    = False,
) -> None:
    from rlhf_lab.reproduce import runner
    from rlhf_lab.sweep import parse_seeds

    findings = _guard(runner.select, names)
    if list_:
        for f in findings:
            typer.echo(runner.describe(f))
        return
    chosen = _guard(parse_seeds, seeds)
    _runs(runner.reproduce, names, chosen[:1] if quick else chosen, out, jobs=jobs, sets=set_ or [],
          echo=typer.echo)


@app.command("warnings-scoreboard")
def warnings_scoreboard(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seeds: Annotated[str | None, typer.Option("--seeds", metavar="SEEDS", help="Seeds scored (default 0-9; "
                                              "--quick: 0-1).")] = None,
    calibration_seeds: Annotated[str | None, typer.Option(
        "--calibration-seeds", metavar="SEEDS", help="Seeds the thresholds are calibrated on, disjoint from "
        "--seeds (default 100-104; --quick: 100).")] = None,
    settings: Annotated[str | None, typer.Option("--settings", help="Comma-separated, of default, p_know1 "
                                                 "(label.p_know=1), hindsight (label.feedback=hindsight); default "
                                                 "all three (--quick: default).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs at once (each is its own process).")] = 1,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the runs and the scoreboard "
                                             "(default runs/warnings-scoreboard, --quick: …-quick).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A micro config (seconds a run): checks the plumbing, "
                                        "measures nothing.")] = False,
) -> None:
    """Score each early-warning detector against gold utility: seeds × settings, thresholds calibrated on other
    seeds; writes OUT/scoreboard.md and .json. Rerun the same command to resume (docs/early-warning.md)."""
    from rlhf_lab.warnings_scoreboard import CALIBRATION_SEEDS, SCORING_SEEDS, base_config, run_scoreboard

    base = _guard(base_config, _config(config, set_), quick=quick)
    chosen = settings.split(",") if settings else (["default"] if quick else None)
    out = out or Path("runs/warnings-scoreboard" + ("-quick" if quick else ""))
    _runs(run_scoreboard, base, out=out, seeds=seeds or ("0-1" if quick else SCORING_SEEDS),
          calibration_seeds=calibration_seeds or ("100" if quick else CALIBRATION_SEEDS), settings=chosen,
          jobs=jobs, echo=typer.echo)


@app.command("prepare-model")
def prepare_model(
    model: Annotated[str, typer.Argument(help="A named model (smollm2-135m-instruct) or a .gguf file.")]
    = "smollm2-135m-instruct",
) -> None:
    """Convert a packaged or GGUF model into a cached safetensors folder (offline) and print where it is.

    `model.path` does this on first use anyway; run it ahead to keep the first run's timing clean."""
    from rlhf_lab.models.lm import resolve_model_path

    folder = _guard(resolve_model_path, model)
    if not (Path(folder) / "config.json").exists():
        _fail(f"{model}: not a named model, a .gguf file or a model folder with config.json")
    typer.echo(str(folder))


def _compare(folders: list[Path], out: Path) -> None:
    from rlhf_lab.audit import write_comparison

    path = write_comparison([str(f) for f in folders], out)
    typer.echo(f"Comparison: {path}")


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved config as YAML."""
    typer.echo(_config(config, set_).to_yaml())


@config_app.command("docs")
def config_docs() -> None:
    """Print every config key with its default and meaning."""
    for key, default, desc in field_docs():
        typer.echo(f"{key} = {default}\n    {desc}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

"""Runs the steps over a run folder, in order, skipping those already done (resume).

This is also the Python API (config in, run folder out):

    from rlhf_lab import load_config, run
    folder = run(load_config(overrides=["policy.kl_coef=0.1"]), out="runs/kl01")

    from rlhf_lab import pipeline
    pipeline.step("reward", "runs/kl01")         # rerun one step; on success the ones after it are forgotten
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from rlhf_lab import trackers
from rlhf_lab.config import Config, ConfigError, build_config, read_yaml
from rlhf_lab.runfolder import STEPS, RunFolder, atomic_write_text
from rlhf_lab.steps.common import Context
from rlhf_lab.ui import info


def _step_fn(name: str) -> Callable[[Context], dict]:
    # Imported lazily so `rlhf-lab --help` does not pay for torch.
    if name == "sft":
        from rlhf_lab.steps.sft import run_sft as fn
    elif name == "sample":
        from rlhf_lab.steps.sample import run_sample as fn
    elif name == "label":
        from rlhf_lab.steps.label import run_label as fn
    elif name == "reward":
        from rlhf_lab.steps.reward import run_reward as fn
    elif name == "policy":
        from rlhf_lab.steps.policy import run_policy as fn
    elif name == "evaluate":
        from rlhf_lab.steps.evaluate import run_evaluate as fn
    else:
        raise ValueError(f"unknown step {name!r}; expected one of {', '.join(STEPS)}")
    return fn


def default_out() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def open_run(out: str | Path, cfg: Config | None = None) -> tuple[Config, RunFolder]:
    """A run folder and its config: the given one is saved; otherwise the saved one is loaded."""
    run = RunFolder(out)
    if cfg is None:
        if not run.config_path.exists():
            raise ConfigError(f"{run.config_path}: no config in this run folder (is it a run folder?)")
        cfg = build_config(read_yaml(run.config_path))
    else:
        run.root.mkdir(parents=True, exist_ok=True)
        if int(os.environ.get("RANK", "0")) == 0:
            atomic_write_text(run.config_path, cfg.to_yaml())
    return cfg, run


def step(name: str, out: str | Path, cfg: Config | None = None) -> dict:
    """Run one step over a run folder (rerunning it if done). Only when it succeeds is the config it ran
    under saved and are the steps after it forgotten; a failed step leaves config.yaml and state.json as
    they were."""
    if name not in STEPS:
        raise ValueError(f"unknown step {name!r}; expected one of {', '.join(STEPS)}")
    run = RunFolder(out)
    saved = run.config_path.read_text() if run.config_path.exists() else None
    if cfg is None:
        cfg, _ = open_run(out)
    # no SFT model when SFT is off; no pairs needed when the preferences are imported
    not_needed = (() if cfg.sft.enabled else ("sft",)) + (("sample",) if cfg.label.source == "import" else ())
    missing = run.missing_before(name, not_needed=not_needed)
    if missing:
        first = f"`rlhf-lab run --out {run.root}`" if saved is None else f"`rlhf-lab {missing[0]} {run.root}`"
        raise ConfigError(f"{run.root}: {name} needs {', '.join(missing)} done first; start with {first}")
    new_yaml = cfg.to_yaml()
    trackers.check_available(cfg.logging.report_to)
    ctx = Context(cfg, run)
    with trackers.session(run.root, cfg, main=ctx.is_main):
        return _run_one(name, ctx, config_yaml=None if new_yaml == saved else new_yaml)


def _warn_if_untested(ctx: Context) -> None:
    """Say so when launched under a sharded setup that docs/scaling.md lists as untested (a warning is shown
    once per place by default)."""
    kind = str(ctx.accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind in ("FSDP", "DEEPSPEED") and ctx.is_main:
        warnings.warn(f"rlhf-lab under {kind} is untested: sampling from the sharded policy can leave processes "
                      "waiting on each other, and the reference and reward models stay whole on every device "
                      "(docs/scaling.md); the tests cover DDP", stacklevel=2)


def _run_one(name: str, ctx: Context, *, config_yaml: str | None = None) -> dict:
    t0 = time.time()
    _warn_if_untested(ctx)
    if name == "sft" and not ctx.cfg.sft.enabled:
        ctx.run.commit_step("sft", config_yaml=config_yaml, skipped=True, seconds=0.0)
        return {"skipped": True}
    ctx.run.root.mkdir(parents=True, exist_ok=True)
    previous = ctx.run.phase_metrics(name) if ctx.run.is_done(name) else []  # replaced if this rerun succeeds
    result = _step_fn(name)(ctx) or {}
    ctx.accelerator.wait_for_everyone()  # every process sees the step's files before the next one reads them
    ctx.run.commit_step(name, config_yaml=config_yaml, replaced_metrics=previous,
                        seconds=round(time.time() - t0, 2))
    return result


def run(cfg: Config | None = None, out: str | Path | None = None, *, resume: bool = False,
        report: bool = True, until: str = STEPS[-1]) -> RunFolder:
    """The whole pipeline: SFT → sample → label → reward → policy → evaluate, then the report.

    With `resume=True`, `out` is an existing run folder: its saved config is used and finished steps
    are skipped (policy optimisation continues from its last checkpoint). With `until`, the run stops after
    that step, without a report (`rlhf-lab reproduce` makes the steps that runs share this way)."""
    if until not in STEPS:
        raise ConfigError(f"--until {until!r}: expected one of {', '.join(STEPS)}")
    if resume:
        if out is None:
            raise ConfigError("resume needs the run folder to continue")
        cfg, run_folder = open_run(out)
        trackers.check_available(cfg.logging.report_to)
    else:
        cfg, out = cfg or Config(), out or default_out()
        trackers.check_available(cfg.logging.report_to)  # before anything is written
        existing = RunFolder(out)
        if existing.state()["done"] and existing.config_path.exists() and \
                not _same_experiment(existing, cfg):
            # its finished steps were made under the other config: skipping them would mix the two
            raise ConfigError(f"{existing.root} is a run with another config; continue it with `rlhf-lab run "
                              f"--resume {existing.root}`, rerun one step with `rlhf-lab STEP {existing.root} "
                              "--set …`, or choose another --out")
        cfg, run_folder = open_run(out, cfg)
    ctx = Context(cfg, run_folder)
    with trackers.session(run_folder.root, cfg, main=ctx.is_main):  # one tracker run for the steps and the audit
        for name in STEPS[:STEPS.index(until) + 1]:
            if run_folder.is_done(name):
                info(f"[dim]{name}: done already, skipped[/dim]")
                continue
            _run_one(name, ctx)
        if report and until == STEPS[-1]:
            build_report(run_folder)
    return run_folder


def _same_experiment(run_folder: RunFolder, cfg: Config) -> bool:
    """Whether the run's saved config is `cfg` but for where metrics are logged (`logging`)."""
    try:
        return build_config(read_yaml(run_folder.config_path)).experiment_yaml() == cfg.experiment_yaml()
    except ConfigError:
        return False


def build_report(run_folder: RunFolder) -> Path:
    """Audit the run (SFT policy vs trained policy, every tension), then write report.html from it."""
    from rlhf_lab.audit import run_audit, write_report

    audit = None
    from rlhf_lab.models.lm import is_model_folder

    if is_model_folder(run_folder / "policy"):
        audit = run_audit(run_folder.root)
        info(f"Audit: {audit['seconds']:.0f} s → {run_folder / 'audit.json'}")
    path = write_report(run_folder.root, audit=audit, audit_if_missing=False)
    info(f"Report: {path}")
    return path

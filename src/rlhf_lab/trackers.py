"""Experiment trackers (`logging.report_to`, `--report-to`): TensorBoard, Weights & Biases and MLflow through
accelerate's tracker classes, each offline by default and writing under the run folder.

A metric is logged in one place: `RunFolder.log` appends the record to metrics.jsonl and hands the same record
to `forward`, so every tracker receives the same namespaced keys (`objective/kl`, `eval/…`, `audit/…`) at the
same step. Keys without a namespace (`step`, `phase`, `checkpoint`) and values that are not numbers stay in
metrics.jsonl only. Tables (the samples of each evaluation point) go to the trackers that hold tables (W&B).

Where the files go, unless the tracker's own environment variables say otherwise:
    tensorboard  RUN/trackers/tensorboard/          (`tensorboard --logdir RUN/trackers/tensorboard`)
    wandb        RUN/trackers/wandb/offline-run-*/  (mode offline unless WANDB_MODE is set; `wandb sync` uploads)
    mlflow       RUN/trackers/mlruns/               (a file store unless MLFLOW_TRACKING_URI is set)

Each process opens its own session: `rlhf-lab run` is one W&B/MLflow run for all its steps and the audit; a
step run on its own (`rlhf-lab policy RUN`) is another, in the same W&B group (the run folder's name).
Torch-free at import: the tracker packages are imported only when a session opens.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlhf_lab.config import Config, ConfigError

# tracker → (module that must import, the package pip installs it from)
REQUIRES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow-skinny")}
INSTALL = "pip install 'rlhf-lab[trackers]'"

_OPEN: dict[Path, TrackerSet] = {}  # run folder → its open session in this process


def check_available(names: list[str]) -> None:
    """Refuse, before anything runs, a tracker whose package is not installed (one line naming the extra)."""
    missing = [n for n in dict.fromkeys(names) if importlib.util.find_spec(REQUIRES[n][0]) is None]
    if missing:
        pkgs = " ".join(REQUIRES[n][1] for n in missing)
        raise ConfigError(f"logging.report_to: {', '.join(missing)} is not installed; {INSTALL} (or pip install "
                          f"{pkgs})")


def flat_config(cfg: Config) -> dict[str, Any]:
    """The config as `section.key` → a number, bool or string (lists and tables as text): what TensorBoard's
    hparams and MLflow's params accept."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node if isinstance(node, bool | int | float | str) else str(node)

    walk(cfg.model_dump(mode="json"), "")
    return out


def metric_values(record: dict) -> dict[str, float]:
    """The metrics of one metrics.jsonl record: its namespaced keys whose values are numbers."""
    return {k: float(v) for k, v in record.items() if "/" in k and isinstance(v, int | float)}


class TrackerSet:
    """The trackers of one run folder, open for one process."""

    def __init__(self, root: Path, cfg: Config):
        from accelerate import PartialState
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

        PartialState()  # the trackers act on the main process; a no-op where a step's Accelerator exists already
        self.root, self.trackers, self._wandb_steps = root, {}, set()
        folder = root / "trackers"
        folder.mkdir(parents=True, exist_ok=True)
        project, name = cfg.logging.project, root.resolve().name
        for kind in dict.fromkeys(cfg.logging.report_to):
            if kind == "tensorboard":
                tracker = TensorBoardTracker("tensorboard", folder)
            elif kind == "wandb":
                kwargs: dict[str, Any] = {"name": name, "group": name, "settings": {"console": "off", "silent": True}}
                if "WANDB_MODE" not in os.environ:
                    kwargs["mode"] = "offline"
                if "WANDB_DIR" not in os.environ:
                    kwargs["dir"] = str(folder)
                tracker = WandBTracker(project, **kwargs)
            else:
                if "MLFLOW_TRACKING_URI" not in os.environ:
                    import mlflow

                    # MLflow 3 keeps its file store in maintenance mode and refuses it unless asked: a folder
                    # under the run is what offline use needs (a server or database: set MLFLOW_TRACKING_URI).
                    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                    mlflow.set_tracking_uri((folder / "mlruns").resolve().as_uri())
                tracker = MLflowTracker(experiment_name=project, run_name=name)
            tracker.start()
            tracker.store_init_configuration(flat_config(cfg))
            self.trackers[kind] = tracker

    def log(self, record: dict) -> None:
        values = metric_values(record)
        if not values:
            return
        # an audit of the checkpoint of update N belongs at step N
        step, phase = record.get("step", record.get("checkpoint")), record.get("phase", "run")
        for kind, tracker in self.trackers.items():
            if kind == "wandb":
                # W&B wants one rising step per run; a run's phases each count from 0, so each key is drawn
                # against its own phase's step (`step/<phase>`), logged beside it.
                if step is not None:
                    self._define_wandb_steps(tracker.tracker, values, f"step/{phase}")
                tracker.log(values if step is None else {**values, f"step/{phase}": step})
            elif kind == "mlflow":
                tracker.log({_mlflow_key(k): v for k, v in values.items()}, step=step or 0)
            else:
                tracker.log(values, step=step)

    def _define_wandb_steps(self, run, values: dict, step_key: str) -> None:
        for key in values:
            if key not in self._wandb_steps:
                run.define_metric(key, step_metric=step_key)
                self._wandb_steps.add(key)

    def log_table(self, name: str, rows: list[dict], *, step: int | None, phase: str) -> None:
        """A table of rows (dicts with the same keys) where the tracker holds tables (W&B)."""
        if not rows or "wandb" not in self.trackers:
            return
        columns = list(rows[0])
        values: dict[str, Any] = {}
        if step is not None:
            values[f"step/{phase}"] = step
        import wandb

        values[name] = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        self.trackers["wandb"].log(values)

    def finish(self) -> None:
        for tracker in self.trackers.values():
            tracker.finish()


def _mlflow_key(key: str) -> str:
    # MLflow's metric names allow letters, digits and _ - . / and spaces
    return re.sub(r"[^\w\-./ ]", "_", key)


@contextmanager
def session(root: Path, cfg: Config, *, main: bool = True) -> Iterator[None]:
    """Open the trackers of `cfg.logging.report_to` for the run folder `root` while the block runs (only in the
    main process, which alone writes metrics), and close them after, whatever happened."""
    key = Path(root).resolve()
    if not cfg.logging.report_to or not main or key in _OPEN:
        yield
        return
    check_available(cfg.logging.report_to)
    trackers = TrackerSet(Path(root), cfg)
    _OPEN[key] = trackers
    try:
        yield
    finally:
        del _OPEN[key]
        trackers.finish()


def forward(root: Path, record: dict) -> None:
    """Hand a metrics.jsonl record to the run's open trackers (nothing when none are open)."""
    if _OPEN:
        trackers = _OPEN.get(Path(root).resolve())
        if trackers is not None:
            trackers.log(record)


def forward_table(root: Path, name: str, rows: list[dict], *, step: int | None, phase: str) -> None:
    """Hand a table to the run's open trackers that hold tables (nothing when none are open)."""
    if _OPEN:
        trackers = _OPEN.get(Path(root).resolve())
        if trackers is not None:
            trackers.log_table(name, rows, step=step, phase=phase)

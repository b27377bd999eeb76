"""The run folder: where every step reads its inputs and writes its outputs, atomically.

A step's output is first written under a temporary name in the same folder and then moved into place
with `os.replace`, so a crash leaves either the old file or the new one, never half of one. A step is
marked done in `state.json` only after all its outputs are in place; resume trusts only that mark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from rlhf_lab import trackers

STEPS = ("sft", "sample", "label", "reward", "policy", "evaluate")
# What a step leaves to continue from; resuming one trained on since-changed inputs would mix old and new.
RESUME_POINTS = {"policy": ("policy_ckpt", "checkpoints")}
# Files made outside the steps, and the steps whose outputs they read.
OUTPUT_INPUTS = {"audit.json": ("sft", "sample", "label", "reward", "policy")}
# The config sections a step reads: those of the whole run, and its own (policy's eval points read `eval`).
# Each step seeds itself from `seed`, so two runs whose configs agree on `step_inputs(…, step)` make the same
# outputs up to that step; `rlhf-lab reproduce` makes them once and copies them (copy_steps). A step that
# starts reading another section must say so here (tests/test_share.py reads the steps' code for it).
RUN_SECTIONS = ("seed", "world", "model", "generation")
STEP_SECTIONS = {"sft": ("sft",), "sample": ("sample",), "label": ("label",), "reward": ("reward",),
                 "policy": ("policy", "eval"), "evaluate": ("eval",)}


def step_inputs(config: dict, step: str) -> dict:
    """The part of a config (a dict as config.yaml holds it) that the outputs of `step` and of every step
    before it are made from."""
    sections = [*RUN_SECTIONS, *(s for earlier in STEPS[:STEPS.index(step) + 1] for s in STEP_SECTIONS[earlier])]
    return {s: config.get(s) for s in dict.fromkeys(sections)}


class StaleError(ValueError):
    """A result made from outputs that have since been rerun or forgotten (the message says how to refresh)."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _is_main() -> bool:
    """Rank 0 (or a single process): the one that writes shared files."""
    return int(os.environ.get("RANK", "0")) == 0


class RunFolder:
    """Paths and bookkeeping of one run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # paths ---------------------------------------------------------------------------------------------
    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    # state ---------------------------------------------------------------------------------------------
    def state(self) -> dict:
        if not self.state_path.exists():
            return {"done": {}}
        try:
            return json.loads(self.state_path.read_text())
        except json.JSONDecodeError as e:  # cut short or edited by hand: say which file
            raise ValueError(f"{self.state_path}: not valid JSON ({e.msg}, line {e.lineno})") from None

    def is_done(self, step: str) -> bool:
        return step in self.state()["done"]

    def versions(self) -> dict[str, int]:
        """The version of each finished step (0 for a step finished before versions were recorded)."""
        return {name: rec.get("version", 0) for name, rec in self.state()["done"].items()}

    def commit_step(self, step: str, *, config_yaml: str | None = None, replaced_metrics: list[dict] | None = None,
                    **info: Any) -> None:
        """Record that `step` succeeded — the only moment the run's bookkeeping changes: save the config
        it ran under (when given), mark it done with a new version and the versions of the steps it read,
        and forget every later step (made from the old outputs) with its resume points and its records in
        metrics.jsonl (the audit's too), as well as `replaced_metrics` (this step's records from its
        previous run, when it was rerun)."""
        if not _is_main():
            return
        if config_yaml is not None:
            atomic_write_text(self.config_path, config_yaml)
        st = self.state()
        version = st.get("last_version", 0) + 1
        earlier, later = STEPS[:STEPS.index(step)], STEPS[STEPS.index(step) + 1:]
        done = st["done"]
        inputs = {s: done[s].get("version", 0) for s in earlier if s in done}
        done[step] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "version": version, "inputs": inputs, **info}
        st["done"] = {s: done[s] for s in STEPS if s in done and s not in later}
        st["last_version"] = version
        write_json(self.state_path, st)
        self._drop_resume_points(later)
        self._drop_metrics(phases={*later, *(("audit",) if step in OUTPUT_INPUTS["audit.json"] else ())},
                           records=replaced_metrics or [])

    def _drop_metrics(self, *, phases: set[str], records: list[dict]) -> None:
        # The report and the audit's curves read metrics.jsonl by phase: records of a forgotten or replaced
        # run would be drawn beside the new ones as if they were one run.
        rows = self.metrics()
        stale = [json.dumps(r, sort_keys=True) for r in records]  # compared as text: NaN equals NaN there
        keep = []
        for r in rows:
            text = json.dumps(r, sort_keys=True)
            if r.get("phase") in phases:
                continue
            if text in stale:
                stale.remove(text)
                continue
            keep.append(r)
        if len(keep) != len(rows):
            write_jsonl(self.metrics_path, keep)

    def phase_metrics(self, phase: str) -> list[dict]:
        """The records of one phase in metrics.jsonl."""
        return [r for r in self.metrics() if r.get("phase") == phase]

    def clear_from(self, step: str) -> None:
        """Forget that `step` and every step after it are done, so resume runs them again (their resume
        points stay: resume continues from them when the config is the same)."""
        if not _is_main():
            return
        st = self.state()
        later = STEPS[STEPS.index(step):]
        st["done"] = {k: v for k, v in st["done"].items() if k not in later}
        write_json(self.state_path, st)

    def _drop_resume_points(self, steps: tuple[str, ...]) -> None:
        # A resume point of a forgotten step was trained on outputs that are about to change: resuming from
        # it would silently mix old and new inputs, so it goes (the results themselves stay, refused as stale).
        for s in steps:
            for name in RESUME_POINTS.get(s, ()):
                if (self.root / name).exists():
                    shutil.rmtree(self.root / name, ignore_errors=True)

    def missing_before(self, step: str, *, not_needed: tuple[str, ...] = ()) -> list[str]:
        """The steps before `step` that are not done, leaving out those the config does not need."""
        done = self.state()["done"]
        return [s for s in STEPS[:STEPS.index(step)] if s not in done and s not in not_needed]

    def record_output(self, name: str) -> None:
        """Record that `name` (a file made outside the steps, e.g. audit.json) was made from the current
        versions of the steps it reads (OUTPUT_INPUTS)."""
        if not _is_main():
            return
        st = self.state()
        versions = {s: rec.get("version", 0) for s, rec in st["done"].items()}
        st.setdefault("outputs", {})[name] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                              "inputs": {s: versions.get(s) for s in OUTPUT_INPUTS[name]}}
        write_json(self.state_path, st)

    def stale_reason(self, name: str) -> str | None:
        """Why `name` no longer matches the run (a step it was made from was rerun or is not done), with the
        command that refreshes it; None when it is current (or was made before versions were recorded)."""
        made = self.state().get("outputs", {}).get(name)
        if made is None:
            return None
        now = self.versions()
        changed = [s for s, v in made["inputs"].items() if now.get(s) != v]
        if not changed:
            return None
        return (f"{self.root / name} is stale: {', '.join(changed)} changed after it was made; "
                f"{self.refresh_command()}")

    def refresh_command(self) -> str:
        """The command that brings every result of the run up to date."""
        missing = [s for s in STEPS if not self.is_done(s)]
        if missing:
            return f"`rlhf-lab run --resume {self.root}` runs {', '.join(missing)} and the audit"
        return f"`rlhf-lab audit {self.root}` remakes it"

    def require_policy(self, *, checkpoint: int | None = None) -> None:
        """Refuse to audit a policy the run's state does not vouch for: the final policy needs the policy
        step done; a checkpoint needs the reward model it is being trained against (stale checkpoints were
        dropped with their step)."""
        needed = "policy" if checkpoint is None else "reward"
        if not self.is_done(needed):
            raise StaleError(f"{self.root / 'policy'}: no current trained policy (the {needed} step is not done"
                             f"{', it was rerun or is unfinished' if (self.root / 'policy').exists() else ''}); "
                             f"{self.refresh_command()}")

    def replace_preferences(self, write: Callable[[Path], list[Path]]) -> list[Path]:
        """Put preferences made outside the label step (an annotation export) into the run: `write(root)`
        writes the files; then the label step's outputs count as a new version and the reward model and
        everything after it are forgotten. Torch-free: the web app calls it."""
        paths = write(self.root)
        if self.config_path.exists() and _is_main():
            st = self.state()
            if "label" in st["done"]:
                info = {k: v for k, v in st["done"]["label"].items()
                        if k not in ("at", "version", "inputs", "preferences_from")}
                self.commit_step("label", **info, preferences_from="annotation export")
            else:
                self.clear_from("reward")
                self._drop_resume_points(STEPS[STEPS.index("reward"):])
        return paths

    # metrics -------------------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Append one JSON object to metrics.jsonl (flushed and synced, so a crash loses at most it) and hand
        it to the run's open experiment trackers, if any (trackers.py). Only the main process writes."""
        if not _is_main():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        trackers.forward(self.root, record)

    def metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash
        return out

    def truncate_metrics(self, keep) -> None:
        """Rewrite metrics.jsonl keeping the records for which keep(record) is true (used on resume)."""
        rows = [r for r in self.metrics() if keep(r)]
        write_jsonl(self.metrics_path, rows)


def copy_steps(src: str | Path, dst: str | Path, *, config_yaml: str, files: dict[str, str] | None = None) -> None:
    """Make the run folder `dst` from `src`, a run stopped after some step (`rlhf-lab run --until STEP`), as if
    `dst` had run those steps itself: every file of `src` — the steps' outputs, state.json with their versions,
    metrics.jsonl with their records — but `dst`'s own config.yaml (and `files`, name → text). Refused
    (ValueError) when the two configs differ in a section those steps read (step_inputs). The folder is built
    under a temporary name and renamed into place: an interruption leaves no `dst`, never a partial one."""
    src, dst = RunFolder(src), Path(dst)
    state = src.state()
    done = list(state["done"])
    if not done or done != list(STEPS[:len(done)]) or state.get("outputs"):
        raise ValueError(f"{src.root}: not a run stopped after a step (done: {', '.join(done) or 'nothing'})")
    last = done[-1]

    def inputs(text: str, where: object) -> dict:  # a part cut short or edited by hand: its runs fail by name
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{where}: not readable YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{where}: not a config (a mapping of sections)")
        return step_inputs(data, last)

    mine, theirs = inputs(config_yaml, f"the config of {dst}"), inputs(src.config_path.read_text(), src.config_path)
    differ = [s for s in mine if mine[s] != theirs[s]]
    if differ:
        raise ValueError(f"{src.root}: its {', '.join(done)} ran under another {', '.join(differ)} config; "
                         f"{dst} cannot start from them")
    for stale in dst.parent.glob(f".{dst.name}.tmp-*"):  # left by an interrupted copy of an earlier invocation
        shutil.rmtree(stale, ignore_errors=True)
    own = {"config.yaml": config_yaml, **(files or {})}
    with atomic_dir(dst) as tmp:
        for item in src.root.iterdir():
            if item.name in own or item.name.startswith("."):  # .NAME.tmp-PID: a write a crash cut short
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        for name, text in own.items():
            atomic_write_text(tmp / name, text)


def code_commit() -> str | None:
    """HEAD of the checkout rlhf_lab is imported from, with '+dirty' when its src/ differs from it: the code
    a measurement was made with (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "src"],
                               capture_output=True, timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")

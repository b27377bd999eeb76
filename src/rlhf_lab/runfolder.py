"""The run folder: where every step reads its inputs and writes its outputs, atomically.

A step's output is first written under a temporary name in the same folder and then moved into place
with `os.replace`, so a crash leaves either the old file or the new one, never half of one. A step is
marked done in `state.json` only after all its outputs are in place; resume trusts only that mark.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STEPS = ("sft", "sample", "label", "reward", "policy", "evaluate")


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
        return json.loads(self.state_path.read_text())

    def is_done(self, step: str) -> bool:
        return step in self.state()["done"]

    def mark_done(self, step: str, **info: Any) -> None:
        if not _is_main():
            return
        st = self.state()
        st["done"][step] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        write_json(self.state_path, st)

    def clear_from(self, step: str) -> None:
        """Forget `step` and every step after it (they depend on it)."""
        st = self.state()
        later = STEPS[STEPS.index(step):]
        st["done"] = {k: v for k, v in st["done"].items() if k not in later}
        write_json(self.state_path, st)

    # metrics -------------------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Append one JSON object to metrics.jsonl (flushed and synced, so a crash loses at most it).
        Only the main process writes."""
        if not _is_main():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

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

"""Group commit: one thread applies the app's writes in batches, one transaction (and one fsync) per batch.

SQLite with `synchronous=FULL` syncs the write-ahead log on every commit, a few milliseconds on an
ordinary disk; committing each label on its own caps a server at a few hundred labels per second. Here
every request hands its write to the writer and waits; the writer takes whatever has queued up, applies
it in one transaction, commits, and only then answers each request. A label is still acknowledged only
after the commit that holds it, so a crash loses nothing that was acknowledged.

An operation is a function of an open Session. It may raise `queue.Rejected` only before it writes
(validation first), and is answered with it. Any other error of one operation must not cost its
neighbours their shared commit: the batch is rolled back, that operation answered with its error, and
the rest applied again in one transaction, each inside a savepoint, so a further failure undoes only
its own writes. Only when a commit itself fails is each operation retried in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import queue as _queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from rlhf_lab.annotate.queue import Rejected
from rlhf_lab.annotate.store import AnnotationStore

T = TypeVar("T")
Op = Callable[[Session], Any]


class _OpFailed(Exception):
    def __init__(self, fut: Future, error: Exception):
        super().__init__(str(error))
        self.fut, self.error = fut, error


class GroupCommitWriter:
    """`await writer.run(op)` applies `op` in the next batch and returns its result after the commit."""

    def __init__(self, store: AnnotationStore, *, max_batch: int = 128):
        self.store, self.max_batch = store, max_batch
        self._queue: _queue.SimpleQueue[tuple[Op, Future] | None] = _queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.ops = 0

    def submit(self, op: Callable[[Session], T]) -> Future[T]:
        """Queue `op`; the thread starts on first use (and again after `close`, e.g. a second lifespan)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="annotate-writer", daemon=True)
                self._thread.start()
        fut: Future[T] = Future()
        self._queue.put((op, fut))
        return fut

    async def run(self, op: Callable[[Session], T]) -> T:
        return await asyncio.wrap_future(self.submit(op))

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except _queue.Empty:
                    break
                if nxt is None:
                    self._apply(batch)
                    return
                batch.append(nxt)
            self._apply(batch)

    def _apply(self, batch: list[tuple[Op, Future]]) -> None:
        self.batches += 1
        self.ops += len(batch)
        try:
            outcomes = self._run(batch, isolate=False)
        except _OpFailed as failed:  # answer it; run the rest again, each now in a savepoint of its own
            failed.fut.set_exception(failed.error)
            batch = [entry for entry in batch if entry[1] is not failed.fut]
            try:
                outcomes = self._run(batch, isolate=True)
            except Exception:
                outcomes = None
        except Exception:
            outcomes = None
        if outcomes is None:  # the commit itself failed
            for entry in batch:
                self._apply_alone(entry)
            return
        for (ok, value), (_, fut) in zip(outcomes, batch, strict=True):
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _run(self, batch: list[tuple[Op, Future]], *, isolate: bool) -> list[tuple[bool, Any]]:
        """Apply the batch in one transaction and commit. Without `isolate`, the first error other than
        `Rejected` (raised before writing) aborts the whole run as `_OpFailed`; with it, each operation
        sits in a savepoint, so its failure undoes its own writes only. Savepoints cost about a third of a
        millisecond of CPU each, so batches run without them until one operation fails."""
        outcomes: list[tuple[bool, Any]] = []
        with self.store.write_session() as s:
            for op, fut in batch:
                try:
                    if isolate:
                        with s.begin_nested():
                            outcomes.append((True, op(s)))
                    else:
                        outcomes.append((True, op(s)))
                except Rejected as e:
                    outcomes.append((False, e))
                except Exception as e:
                    if not isolate:
                        raise _OpFailed(fut, e) from e
                    outcomes.append((False, e))
        return outcomes

    def _apply_alone(self, entry: tuple[Op, Future]) -> None:
        op, fut = entry
        try:
            with self.store.session() as s:
                result = op(s)
        except BaseException as e:  # handed to the waiting request, which answers with an error
            fut.set_exception(e)
        else:
            fut.set_result(result)

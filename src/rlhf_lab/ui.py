"""Terminal output: one console, progress bars for slow work, quiet when asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def info(msg: str) -> None:
    if not _quiet:
        console.print(msg)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """`with progress("PPO", 60) as advance: … advance(1, loss=0.3)` — a bar with live fields."""
    if _quiet:
        yield lambda n=1, **fields: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total, status="")

        def advance(n: int = 1, **fields: float) -> None:
            status = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            bar.update(task, advance=n, **({"status": status} if fields else {}))

        yield advance


def counted(n, noun: str) -> str:
    """'1 epoch', '3 epochs': a count and its noun, in the plural unless the count is one."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"

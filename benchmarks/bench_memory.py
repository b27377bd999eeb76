"""Peak memory of this process, the same way for both sides: on a GPU the peak of
`torch.cuda.max_memory_allocated` since `reset_peak()`; on a CPU the peak resident set size (ru_maxrss:
the interpreter, libraries and models included, so compare it between sides, not to the model size)."""

from __future__ import annotations

import resource


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

"""What both sides report, measured the same way. Peak memory of this process: on a GPU the peak of
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


def result(side: str, algo: str, per_step: int, wall: list[float], cpu: list[float], *,
           dtypes: dict[str, dict[str, int]] | None = None) -> dict:
    """The JSON both sides print: median wall and CPU seconds per step (warm-up step excluded), samples/s of
    each, and peak memory. CPU seconds count every thread of the process; on a machine shared with other
    work they measure the work done, where wall time also measures the others' load. `dtypes`: what each
    model computed in ({role: {dtype: calls}}, `bench_dtype.DtypeProbe`)."""
    import statistics

    import torch

    wall_s = statistics.median(wall)
    cpu_s = statistics.median(cpu) if cpu and not torch.cuda.is_available() else None
    return {"side": side, "algo": algo, "steps": len(wall) + 1, "step_s": wall_s, "samples_per_s": per_step / wall_s,
            "cpu_step_s": cpu_s, "cpu_samples_per_s": per_step / cpu_s if cpu_s else None,
            "peak_mem_mb": peak_memory_mb(), "step_times": [round(t, 4) for t in wall],
            "cpu_step_times": [round(t, 4) for t in cpu], "dtypes": dtypes or {}}

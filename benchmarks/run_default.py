"""Wall time and peak memory of `rlhf-lab run` with defaults (issue: ≤ 3 min, < 4 GB on 2 CPU cores).

    python benchmarks/run_default.py [--set key=value ...] [--json runs/bench/default_run.json]

Runs the CLI in a child process and reads its peak resident memory from the OS (getrusage of children),
so the number includes everything the run loads. Prints one Markdown table row per run; --json also writes
them with the date and commit, the source measured.py regenerates benchmarks/README.md's table from."""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import default_run_record, default_run_table, stamp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="Also write the results to this file.")
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "rlhf-lab")
    records = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = [exe, "run", "--quiet", "--out", str(out)] + [a for s in args.sets for a in ("--set", s)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KB on Linux
            records.append(default_run_record(out, wall_s=wall, peak_rss_gb=peak_gb, sets=args.sets))
        print(default_run_table(records)[-1] if len(records) > 1 else "\n".join(default_run_table(records)),
              flush=True)
    machine = f"{platform.processor() or platform.machine()}, python {platform.python_version()}"
    print(f"\n{machine}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**stamp(), "machine": machine, "runs": records}, indent=1))


if __name__ == "__main__":
    main()

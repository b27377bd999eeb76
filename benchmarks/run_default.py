"""Wall time and peak memory of `rlhf-lab run` with defaults (issue: ≤ 3 min, < 4 GB on 2 CPU cores).

    python benchmarks/run_default.py [--set key=value ...]

Runs the CLI in a child process and reads its peak resident memory from the OS (getrusage of children),
so the number includes everything the run loads. Prints one Markdown table row per run.
"""

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "rlhf-lab")
    print("| run | wall s | peak RSS GB | RM acc | proxy SFT→RL (SFT std) | gold SFT→RL | KL |")
    print("|---|---|---|---|---|---|---|")
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = [exe, "run", "--quiet", "--out", str(out)] + [a for s in args.sets for a in ("--set", s)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KB on Linux
            s = json.loads((out / "eval" / "summary.json").read_text())
            rm = json.loads((out / "reward" / "metrics.json").read_text())
            sft, pol = s["sft"], s["policy"]
            gain = (pol["policy/proxy_reward"] - sft["sft/proxy_reward"]) / sft["sft/proxy_reward_std"]
            print(f"| {i + 1} {' '.join(args.sets)} | {wall:.0f} | {peak_gb:.2f} | {rm['reward/accuracy']:.3f} | "
                  f"{sft['sft/proxy_reward']:+.2f} → {pol['policy/proxy_reward']:+.2f} ({gain:+.2f}) | "
                  f"{sft['sft/gold_utility']:+.2f} → {pol['policy/gold_utility']:+.2f} | {pol['policy/kl']:.2f} |")
    print(f"\n{platform.processor() or platform.machine()}, python {platform.python_version()}")


if __name__ == "__main__":
    main()

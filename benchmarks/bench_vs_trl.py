"""Ours against TRL, side by side, in one invocation: for each size and algorithm, our run and then the peer's,
each in a fresh process (so peak memory is its own), on identical model shape and weights, batch, prompt and
response lengths, epochs and precision (benchmarks/bench_shapes.py). Prints samples/s, the ratio and peak
memory, and with --markdown appends the table to a file.

    python benchmarks/bench_vs_trl.py --sizes tiny,25m                     # CPU
    python benchmarks/bench_vs_trl.py --sizes gpt2                         # a GPU (bf16)
    python benchmarks/bench_vs_trl.py --sizes tiny --algos ppo,grpo --repeat 3

PPO's peer is TRL 1.12 (`trl.experimental.ppo`, the last release with PPO) in its own environment
(--trl112-python, default /tmp/trl112/bin/python); GRPO, RLOO, DPO and reward-model training run against TRL
1.16 in this interpreter. PPO is reported in two rows, each stating its layout: `ppo`, like for like, is ours with
a separate value model against TRL's separate value model (policy, reference, reward and value models on both
sides); `ppo_shared` is ours with the value head on the policy's trunk (our default, fewer forwards per update)
against the same TRL run, the best TRL 1.12 can do (it has no shared layout).

Every row also states the precision each side really computed in: both sides hook the first matmul of each model
(`bench_dtype.py`), and a row where any model of either side ran in another dtype than the size's stated
precision is flagged ("MISMATCH") rather than silently compared; so is a side whose models' dtypes were never
observed ("NOT OBSERVED").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER = {"ppo": "ppo", "ppo_shared": "ppo", "grpo": "grpo", "rloo": "rloo", "dpo": "dpo", "rm": "rm"}
UNIT = {"dpo": "pairs/s", "rm": "pairs/s"}
# PPO's value function, ours / the peer's (TRL 1.12 always runs a separate value model)
LAYOUT = {"ppo": "separate value model / separate value model",
          "ppo_shared": "shared value head / separate value model"}


def dtype_cell(runs: list[dict], precision: str) -> str:
    """What one side's models computed in over its runs: "bfloat16" when every watched matmul of every model
    ran in the stated precision, else "MISMATCH reference: float32 ×41; …", or "NOT OBSERVED" when no watched
    matmul ran at all (the models computed elsewhere than the hooked modules: unverified, not like for like)."""
    from bench_dtype import EXPECTED, mismatches

    dtypes: dict[str, dict[str, int]] = {}
    for r in runs:
        for role, counts in r.get("dtypes", {}).items():
            for d, n in counts.items():
                dtypes.setdefault(role, {})[d] = dtypes.setdefault(role, {}).get(d, 0) + n
    if not dtypes:
        return "NOT OBSERVED"
    bad = mismatches(dtypes, precision)
    return ("MISMATCH " + "; ".join(bad)) if bad else f"{EXPECTED[precision]} ({', '.join(sorted(dtypes))})"


def _run(python: str, script: str, assets: Path, algo: str, timeout: int, threads: int | None,
         pythonpath: str | None = None) -> dict:
    env = dict(os.environ)
    if threads:  # the same for both sides
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.time()
    proc = subprocess.run([python, str(HERE / script), str(assets), algo], capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout)[-2500:]
        return {"error": f"{script} {algo} exited {proc.returncode}:\n{tail}"}
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_s"] = time.time() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,25m", help="comma-separated: tiny, 25m, gpt2")
    ap.add_argument("--algos", default="ppo,ppo_shared,grpo,rloo,dpo,rm")
    ap.add_argument("--repeat", type=int, default=1, help="runs per side, alternating; the median is reported")
    ap.add_argument("--trl112-python", default="/tmp/trl112/bin/python",
                    help="interpreter with TRL 1.12 for PPO's peer (a separate virtual environment)")
    ap.add_argument("--trl112-path", default=None,
                    help="or: folders put first on PYTHONPATH for PPO's peer (TRL 1.12 installed with --target)")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads of both sides (OMP_NUM_THREADS); 1 on a machine shared with other work")
    ap.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    ap.add_argument("--json", type=Path, default=None, help="write every raw result to this file")
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    from bench_setup import build

    rows, raw = [], []
    for size in args.sizes.split(","):
        assets = build(size, Path(tempfile.mkdtemp(prefix=f"bench_{size}_")))
        precision = json.loads((assets / "bench.json").read_text())["precision"]
        for algo in args.algos.split(","):
            ppo_peer = PEER[algo] == "ppo"
            peer_python = args.trl112_python if ppo_peer else sys.executable
            peer_path = args.trl112_path if ppo_peer else None
            ours, theirs = [], []
            for _ in range(args.repeat):  # alternate the sides, so drifting machine load hits both alike
                ours.append(_run(sys.executable, "bench_ours.py", assets, algo, args.timeout, args.threads))
                theirs.append(_run(peer_python, "bench_trl.py", assets, PEER[algo], args.timeout, args.threads,
                                   peer_path))
            raw.append({"size": size, "algo": algo, "ours": ours, "peer": theirs})
            errors = [r["error"] for r in ours + theirs if "error" in r]
            if errors:
                print(f"[{size} {algo}] " + "\n".join(errors), file=sys.stderr, flush=True)
                if args.json:
                    args.json.write_text(json.dumps(raw, indent=1))
                continue
            def med(rs, key):
                vals = [r[key] for r in rs if r.get(key)]
                return statistics.median(vals) if vals else float("nan")

            o, t = med(ours, "samples_per_s"), med(theirs, "samples_per_s")
            oc, tc = med(ours, "cpu_samples_per_s"), med(theirs, "cpu_samples_per_s")
            om, tm = med(ours, "peak_mem_mb"), med(theirs, "peak_mem_mb")
            dt_ours, dt_peer = dtype_cell(ours, precision), dtype_cell(theirs, precision)
            if "MISMATCH" in dt_ours + dt_peer or "NOT OBSERVED" in dt_ours + dt_peer:
                print(f"[{size} {algo}] compute dtypes differ from the stated {precision} (or were not observed): "
                      f"ours {dt_ours}; peer {dt_peer}", file=sys.stderr, flush=True)
            row = (size, algo, theirs[0]["side"], LAYOUT.get(algo, "–"), dt_ours, dt_peer, UNIT.get(algo, "samples/s"),
                   f"{o:.2f}", f"{t:.2f}", f"{o / t:.2f}×", f"{oc:.2f}", f"{tc:.2f}", f"{oc / tc:.2f}×", f"{om:.0f}",
                   f"{tm:.0f}")
            rows.append(row)
            print(" | ".join(row), flush=True)
            if args.json:  # after every algorithm, so that a run stopped early keeps what it measured
                args.json.write_text(json.dumps(raw, indent=1))

    header = ("size", "algorithm", "peer", "layout ours / peer", "dtype ours", "dtype peer", "unit",
              "ours (wall)", "peer (wall)", "ratio (wall)", "ours (CPU)",
              "peer (CPU)", "ratio (CPU)", "peak MB ours", "peak MB peer")
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    print("\n".join(table))
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write("\n".join(table) + "\n")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()

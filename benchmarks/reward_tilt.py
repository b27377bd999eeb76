"""Does a reward model carry signal the policy can use? Best-of-n from the SFT policy, scored by gold.

    python benchmarks/reward_tilt.py RUN [RUN ...] --p-know 0.5 0.7 [--prompts 256] [--json PATH]

For each run folder (the SFT model and its samples done, e.g. `rlhf-lab sample RUN`) and each `label.p_know`,
the labels and the reward model are made again in a temporary copy (`rlhf-lab label`, `rlhf-lab reward`, the
run's own seed, one thread), then `--prompts` held-out audit prompts get 16 SFT samples each and the expected gold
utility of best-of-n under that reward model is read off them for n = 1, 2, 4, 8, 16 (the unbiased estimator of
audit/overoptimisation.best_of_n). Best-of-n is the reward model's own tilt of the SFT distribution, with no
optimiser in between: if gold does not rise with n at small n, no policy optimiser can make RLHF help with that
reward model (docs/world.md uses this to choose `label.p_know`). The gain is gold at n = 16 minus n = 1, paired
over prompts, with a normal 95 % interval.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

KEEP = ("config.yaml", "state.json", "metrics.jsonl", "sft", "tokenizer", "samples.jsonl", "pairs.jsonl")
NS = (1, 2, 4, 8, 16)


def relabel(run: Path, out: Path, p_know: float) -> float:
    """A copy of `run` up to its samples, labelled and rewarded again at `p_know`; returns the RM accuracy."""
    import yaml

    out.mkdir(parents=True)
    for name in KEEP:
        src = run / name
        if src.is_dir():
            shutil.copytree(src, out / name)
        elif src.exists():
            shutil.copy2(src, out / name)
    seed = yaml.safe_load((run / "config.yaml").read_text()).get("seed", 0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    exe = Path(sys.executable).with_name("rlhf-lab")
    for step in ("label", "reward"):
        subprocess.run([str(exe), step, str(out), "--set", f"seed={seed}", "--set", f"label.p_know={p_know}", "-q"],
                       check=True, env=env)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return next(r["reward/accuracy"] for r in rows if "reward/accuracy" in r)


def tilt(run: Path, prompts: int) -> dict:
    """Best-of-n gold by n, overall and per prompt family, from `prompts` audit prompts × 16 SFT samples."""
    import torch

    from rlhf_lab.audit.overoptimisation import best_of_n
    from rlhf_lab.audit.sampling import AuditContext, AuditSizes

    torch.set_num_threads(1)

    class SFTOnly(AuditContext):  # the run has no trained policy yet: only the SFT model is sampled
        @functools.cached_property
        def models(self):
            return {"sft": self.loader.sft_lm(self.tok).to(self.device).eval()}

    ctx = SFTOnly(run, sizes=AuditSizes(diversity_prompts=prompts, bon_n=max(NS), diversity_k=8))
    groups = ctx.multi_samples("sft")
    proxy = np.array([[s.proxy for s in g] for g in groups])  # (P, 16)
    gold = np.array([[s.gold for s in g] for g in groups], dtype=float)
    _, bg = best_of_n(proxy, gold, list(NS))  # (P, len(NS))
    gain = bg[:, -1] - bg[:, 0]
    half = 1.96 * gain.std(ddof=1) / np.sqrt(len(gain))
    families = np.array([g[0].prompt.family for g in groups])
    return {"prompts": len(groups), "gold": bg.mean(0).round(3).tolist(),
            "gain": {"value": float(gain.mean()), "lo": float(gain.mean() - half), "hi": float(gain.mean() + half)},
            "family": {f: bg[families == f].mean(0).round(3).tolist() for f in sorted(set(families))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="Run folders with SFT and samples done.")
    ap.add_argument("--p-know", nargs="+", type=float, default=[0.5, 0.7], help="label.p_know values to compare.")
    ap.add_argument("--prompts", type=int, default=256, help="Held-out audit prompts (16 SFT samples each).")
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    args = ap.parse_args()
    for run in args.runs:
        if not (run / "samples.jsonl").exists():
            ap.error(f"{run}: no samples.jsonl; run `rlhf-lab sft {run}` and `rlhf-lab sample {run}` first")
    results = []
    print("| run | p_know | RM acc | best-of-n gold, n = " + ", ".join(map(str, NS)) + " | gain n=16 − n=1 [95 % CI] |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        for pk in args.p_know:
            with tempfile.TemporaryDirectory(prefix="tilt-") as tmp:
                acc = relabel(run, Path(tmp) / "run", pk)
                t = tilt(Path(tmp) / "run", args.prompts)
            results.append({"run": str(run), "p_know": pk, "rm_accuracy": acc, **t})
            g = t["gain"]
            print(f"| {run.name} | {pk} | {acc:.3f} | " + " → ".join(f"{x:+.2f}" for x in t["gold"])
                  + f" | {g['value']:+.2f} [{g['lo']:+.2f}, {g['hi']:+.2f}] |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

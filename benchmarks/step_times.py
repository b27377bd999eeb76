"""Where a run's time goes: CPU seconds of each step, and of each phase of the policy step, on one thread.

    python benchmarks/step_times.py RUN [--steps sft,sample,label,reward,policy,evaluate] [--json OUT]

RUN is a finished run folder; it is copied to a temporary folder and each step is rerun there in order, in this
process, with torch on one thread. CPU time (process time: user + system), not wall time, so that a shared
machine still gives comparable figures. The policy step's phases are timed by wrapping the functions that
make them (rollout, its sampling, reference and reward-model passes, PPO's log π_old/V pass and epochs, the
evaluation points and their parts, sample tables, checkpoints, early-warning bookkeeping); a phase's time
includes its parts'. Prints a Markdown table; --json also writes it with the date and commit (figures.stamp)."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from figures import stamp

STEPS = ("sft", "sample", "label", "reward", "policy", "evaluate")


def time_policy_phases(totals: dict[str, float]) -> None:
    """Wrap the policy step's functions so that each call adds its CPU seconds to totals[phase]."""
    from rlhf_lab.runfolder import RunFolder
    from rlhf_lab.steps import evaluate as ev
    from rlhf_lab.steps.policy import loop, online, ppo

    def wrap(owner, name: str, phase: str) -> None:
        fn = getattr(owner, name)
        totals.setdefault(phase, 0.0)  # the table lists phases in this order

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[phase] += time.process_time() - start

        setattr(owner, name, timed)

    for owner, name, phase in (
            (online, "policy_reference_reward", "policy: load models"),
            (online, "rollout", "policy: rollout"),
            (online, "sample_batch", "policy: rollout / sampling"),
            (online, "response_logits", "policy: rollout / log π_ref pass"),
            (online, "score_completions", "policy: rollout / reward-model pass"),
            (ppo, "old_logprobs_and_values", "policy: update / log π_old and V pass"),
            (ppo, "ppo_update", "policy: update / PPO epochs (forward, backward, optimiser)"),
            (loop.EvalPoints, "__call__", "policy: evaluation points"),
            (ev, "generate", "policy: evaluation points / sampling"),
            (ev, "score_tokens", "policy: evaluation points / reward-model pass"),
            (ev, "sequence_kl", "policy: evaluation points / KL passes"),
            (loop, "save_lm", "policy: evaluation points / checkpoint saves"),
            (online, "log_sample_table", "policy: sample tables"),
            (online, "checkpoint", "policy: resume checkpoints"),
            (online.Watch, "observe", "policy: early-warning bookkeeping"),
            (online.Watch, "check", "policy: early-warning bookkeeping"),
            (RunFolder, "log", "policy: metrics log")):
        wrap(owner, name, phase)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="A finished run folder (it is copied, never changed).")
    ap.add_argument("--steps", default=",".join(STEPS), help="Steps to rerun, in pipeline order.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the figures to this file.")
    args = ap.parse_args()
    steps = [s for s in STEPS if s in args.steps.split(",")]
    import torch

    torch.set_num_threads(1)
    from rlhf_lab import pipeline
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    phases: dict[str, float] = defaultdict(float)
    if "policy" in steps:
        time_policy_phases(phases)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(args.run, run)
        shutil.rmtree(run / "policy_ckpt", ignore_errors=True)  # else the policy step resumes from it
        for name in steps:
            before = dict(phases)
            start = time.process_time()
            pipeline.step(name, run)
            rows.append({"what": name, "cpu_s": round(time.process_time() - start, 1)})
            rows += [{"what": k, "cpu_s": round(v - before.get(k, 0.0), 1)} for k, v in phases.items()
                     if k.startswith(f"{name}:")]
    print("| step or phase | CPU s (one thread) |\n|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['cpu_s']} |")
    machine = f"{platform.processor() or platform.machine()}, python {platform.python_version()}"
    print(f"\n{machine}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**stamp(), "machine": machine, "run": str(args.run), "rows": rows},
                                        indent=1))


if __name__ == "__main__":
    main()

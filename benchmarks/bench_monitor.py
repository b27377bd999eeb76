"""What the tension monitor costs a TRL run: CPU time of its measurements as a share of the training steps'.

    python benchmarks/bench_monitor.py [--steps 8] [--every 4] [--hidden 64]

One invocation, one thread: a GRPOTrainer (TRL 1.16) on a tiny chat model (1 layer × `hidden`, byte-level BPE
tokenizer with a chat template) trains for `steps` steps with a TensionMonitor at its default probe size
measuring every `every` steps. The CPU time (time.process_time) of each measurement and of the steps between
them is recorded; the overhead at the monitor's default interval (every=50) is
    (CPU per measurement / 50) / (CPU per training step).
Prints one JSON line. CPU time, not wall time: the machine this ran on may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.chat_models: the tiny chat model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8, help="completions per step (per_device_train_batch_size)")
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--completion", type=int, default=32, help="max_completion_length")
    a = ap.parse_args()

    import torch
    from datasets import Dataset
    from tests.chat_models import save_chat_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_lab.integrations import TensionMonitor, gold_reward
    from rlhf_lab.integrations.monitor import MONITOR_SIZES
    from rlhf_lab.integrations.rewards import world_dataset

    torch.set_num_threads(1)

    class CpuClock(TrainerCallback):
        """CPU time from one step's end to the next (the monitor's own time subtracted afterwards)."""

        def __init__(self):
            self.steps: list[float] = []
            self.t = None

        def on_step_begin(self, args, state, control, **kw):
            if self.t is None:
                self.t = time.process_time()

        def on_step_end(self, args, state, control, **kw):
            now = time.process_time()
            self.steps.append(now - self.t)
            self.t = now

    cpu: list[float] = []  # CPU seconds of each measurement

    class TimedMonitor(TensionMonitor):
        def measure(self, step, *, output_dir=None):
            t = time.process_time()
            out = super().measure(step, output_dir=output_dir)
            cpu.append(time.process_time() - t)
            return out

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_chat_model(Path(tmp) / "m", seed=0, hidden=a.hidden)
        tok = AutoTokenizer.from_pretrained(folder)

        def length_reward(prompts, completions, **kw):  # any reward that varies, so every step updates
            return [float(len(c if isinstance(c, str) else c[0]["content"])) for c in completions]

        args = GRPOConfig(output_dir=tmp, per_device_train_batch_size=a.batch, num_generations=a.generations,
                          max_completion_length=a.completion, max_steps=a.steps, report_to="none", use_cpu=True,
                          save_strategy="no", bf16=False, logging_steps=1, reward_weights=[1.0, 0.0], seed=0)
        clock, monitor = CpuClock(), TimedMonitor(every=a.every)
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(folder), args=args,
                              reward_funcs=[length_reward, gold_reward()], processing_class=tok,
                              train_dataset=Dataset.from_list(world_dataset(256)), callbacks=[clock])
        monitor.attach(trainer)  # after the clock: a step's end is timed before the monitor measures
        trainer.train()
    # the clock's interval ending at step s+1 contains the measurement made at the end of step s
    steps = list(clock.steps)
    for k, c in enumerate(cpu):
        i = (k + 1) * a.every  # the interval after the k-th measurement (index = step number, 0-based)
        if i < len(steps):
            steps[i] -= c
    train = steps[1:]  # the first step also builds the trainer's state
    per_step = sum(train) / len(train)
    per_call = sum(cpu) / len(cpu)
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "threads": 1, "hidden": a.hidden, "batch": a.batch,
        "generations": a.generations, "completion": a.completion, "steps": a.steps, "measurements": len(cpu),
        "probe_prompts": sum(getattr(MONITOR_SIZES, f) for f in ("question", "belief", "pushback", "feedback",
                                                                 "benign")) + 2 * MONITOR_SIZES.harmful,
        "cpu_s_per_step": round(per_step, 3), "cpu_s_per_measurement": round(per_call, 3),
        "measurement_in_steps": round(per_call / per_step, 2),
        "overhead_at_every_50": round(per_call / 50 / per_step, 4),
    }))


if __name__ == "__main__":
    main()

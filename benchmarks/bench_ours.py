"""Our side of the benchmark: run one algorithm of rlhf-lab on the inputs `bench_setup.py` built, print one
JSON line (seconds per step, samples/s, peak memory).

    python benchmarks/bench_ours.py ASSETS ALGO      # ALGO: ppo | ppo_shared | grpo | rloo | dpo | rm

The algorithms run exactly as in a pipeline (`steps.policy.ALGORITHMS`), over a scratch run folder whose
sft/ and reward/ are the shared models; step times come from the `…/elapsed_s` each update logs (evaluation
points are excluded: they run after an update's record is written).
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1] / "src"))  # a checkout without `pip install -e .`
from bench_dtype import DtypeProbe, first_matmul
from bench_memory import reset_peak, result
from bench_shapes import KL_COEF, LR


def config(spec: dict, algo: str):
    from rlhf_lab.config import build_config

    bf16 = spec["precision"] == "bf16"
    policy = {
        "algorithm": {"ppo_shared": "ppo", "rm": "ppo"}.get(algo, algo), "updates": spec["updates"],
        "batch_size": spec["batch"], "lr": LR,
        "kl_coef": KL_COEF.get(algo.split("_")[0], 0.05),
        "checkpoint_every": 10**6, "sample_table_every": 10**6,
    }
    if algo in ("ppo", "ppo_shared"):
        mb = spec["batch"] // spec["minibatches"]
        policy.update(epochs=spec["ppo_epochs"], minibatches=spec["minibatches"], microbatch_size=mb,
                      value_model="separate" if algo == "ppo" else "shared")
    elif algo in ("grpo", "rloo"):  # TRL's defaults: one pass, one optimiser step per batch
        policy.update(k=spec["k"], epochs=1, minibatches=1, microbatch_size=spec["batch"])
    elif algo == "dpo":  # offline: no updates, rollouts or sample table
        policy = {k: v for k, v in policy.items() if k not in ("updates", "sample_table_every")}
        policy.update(batch_size=spec["dpo_batch"], microbatch_size=2 * spec["dpo_batch"])
    return build_config({
        "model": {"dtype": "bfloat16" if bf16 else "float32"},
        "generation": {"max_new_tokens": spec["new_tokens"]},
        "policy": policy,
        "reward": {"batch_size": spec["rm_batch"], "epochs": 1, "eval_share": 0.05},
        "eval": {"n_prompts": 8, "batch_size": 8, "schedule": "every", "every": 10**6},
    })


def watch_dtypes(ctx, algo: str) -> DtypeProbe:
    """Hook every model the algorithm loads through `ctx` (and PPO's value function) as the peer's side does, so
    the result says what each computed in."""
    from rlhf_lab.steps.policy.ppo import PPO

    probe = DtypeProbe()
    policy_and_reference, reward_model, sft_lm = ctx.policy_and_reference, ctx.reward_model, ctx.sft_lm

    def both(*a):
        policy, ref = policy_and_reference(*a)
        return probe.watch("policy", policy), probe.watch("reference", ref)

    ctx.policy_and_reference = both
    ctx.reward_model = lambda: probe.watch("reward", reward_model())
    # the reward-model benchmark trains a reward model initialised from the SFT model; the others' π_ref
    ctx.sft_lm = lambda: probe.watch("reward" if algo == "rm" else "reference", sft_lm())
    trained = PPO.trained

    def with_value(self, ctx, policy):
        pv = trained(self, ctx, policy)
        # V: the head on the policy's trunk, or the value model's own first layer
        return probe.watch("value", pv, layer=pv.value_head if pv.shared else first_matmul(pv.value_model))

    PPO.trained = with_value  # this process runs one benchmark: the patch ends with it
    return probe


def run(assets: Path, algo: str) -> dict:
    import torch

    from rlhf_lab.runfolder import RunFolder
    from rlhf_lab.steps.common import Context, get_accelerator
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    spec = json.loads((assets / "bench.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="bench_ours_"))
    shutil.copytree(assets / "policy", work / "sft")
    shutil.copytree(assets / "reward", work / "reward")
    cfg = config(spec, algo)
    ctx = Context(cfg, RunFolder(work))
    get_accelerator(cfg)
    probe = watch_dtypes(ctx, algo)
    pairs = json.loads((assets / "pairs.json").read_text())
    # CPU seconds of this process at every update's record: on a shared machine the time the work took,
    # not the time others' work took
    cpu_marks = []
    ns = {"ppo_shared": "ppo"}.get(algo, algo)
    log = ctx.run.log
    ctx.run.log = lambda record: (cpu_marks.append(time.process_time()) if f"{ns}/elapsed_s" in record else None,
                                  log(record))[1]
    reset_peak()
    if algo == "rm":
        import contextlib

        import rlhf_lab.steps.reward as reward

        ends: list[tuple[float, float]] = []  # (wall, CPU) at the end of every optimiser step

        @contextlib.contextmanager
        def step_clock(_label, _total):
            def advance(_n=1, **_fields):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                ends.append((time.perf_counter(), time.process_time()))
            yield advance

        reward.progress = step_clock  # train_reward_model advances it once per optimiser step
        tokenized = reward.tokenize_pairs(ctx, pairs)
        reward.train_reward_model(ctx, tokenized, tokenized[:8], seed=0)
        # a step is what lies between two step ends (batching included), as on the peer's side
        times = [b[0] - a[0] for a, b in itertools.pairwise(ends)]
        cpu_times = [b[1] - a[1] for a, b in itertools.pairwise(ends)]
        per_step = spec["rm_batch"]
    else:
        from rlhf_lab.steps.policy import ALGORITHMS

        if algo == "dpo":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(pairs), work / "preferences.parquet")
        ALGORITHMS[cfg.policy.algorithm](ctx)
        elapsed = [r[f"{ns}/elapsed_s"] for r in ctx.run.metrics() if f"{ns}/elapsed_s" in r]
        times = [b - a for a, b in zip([0.0, *elapsed], elapsed, strict=False)]
        cpu_times = [b - a for a, b in itertools.pairwise(cpu_marks)]  # from update 2 on
        per_step = spec["dpo_batch"] if algo == "dpo" else spec["batch"]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    shutil.rmtree(work, ignore_errors=True)
    # the first step warms up (allocations, kernels): the intervals between step ends (rm, CPU marks) start after
    # it; the policy algorithms' wall times start at the loop's start
    measured = times if algo == "rm" or len(times) == 1 else times[1:]
    return result("ours", algo, per_step, measured, cpu_times, dtypes=probe.report())


if __name__ == "__main__":
    print("RESULT " + json.dumps(run(Path(sys.argv[1]), sys.argv[2])), flush=True)

"""The peer's side of the benchmark: run one TRL trainer on the inputs `bench_setup.py` built, print one JSON
line (seconds per step, samples/s, peak memory). Imports only torch, transformers, datasets and TRL, so it runs
in TRL 1.12's own environment for PPO (the last release with PPO, `trl.experimental.ppo`).

    python benchmarks/bench_trl.py ASSETS ALGO      # ALGO: ppo (TRL 1.12) | grpo | rloo | dpo | rm (TRL 1.16)

Settings mirror `bench_ours.config`: the same batch, lengths, epochs, minibatches, KL coefficient and
precision; TRL's defaults that change the amount of work (gradient checkpointing, bf16 on a CPU) are set to
what ours does, and its reward-model batches are grouped by length as ours are. The models are loaded in the
stated precision (bf16 weights in a bf16 comparison): TRL 1.12's PPO generates with the unwrapped policy and runs
its reference and reward models outside accelerate's autocast, so fp32 weights would leave its rollout in fp32.
Every model's compute dtype is observed (`bench_dtype.py`) and reported with the result.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dtype import DtypeProbe
from bench_memory import reset_peak, result
from bench_shapes import KL_COEF, LR


def _timer():
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall and CPU time of every optimisation step (PPO: every rollout + its epochs), from one step's end to
        the next: batching and data loading included, as on our side."""

        def __init__(self):
            self.times: list[float] = []
            self.cpu_times: list[float] = []
            self.start = self.cpu_start = None

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            now, cpu = time.perf_counter(), time.process_time()
            if self.start is not None:
                self.times.append(now - self.start)
                self.cpu_times.append(cpu - self.cpu_start)
            self.start, self.cpu_start = now, cpu

    return StepTimer()


def common_args(spec: dict, out: str) -> dict:
    import torch

    return {"output_dir": out, "report_to": "none", "save_strategy": "no", "logging_steps": 1, "seed": 0,
            "learning_rate": LR, "bf16": spec["precision"] == "bf16", "use_cpu": not torch.cuda.is_available(),
            "gradient_checkpointing": False, "disable_tqdm": True}


def run(assets: Path, algo: str) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    spec = json.loads((assets / "bench.json").read_text())
    out = tempfile.mkdtemp(prefix="bench_trl_")
    tok = AutoTokenizer.from_pretrained(assets / "policy")
    tok.padding_side = "left"
    prompts = json.loads((assets / "prompts.json").read_text())
    pairs = json.loads((assets / "pairs.json").read_text())
    timer = _timer()
    # The stated precision as the weights' dtype: autocast alone (bf16=True) does not reach TRL's generation nor
    # its reference and reward models. Ours keeps fp32 weights under autocast, so in bf16 the peer's optimiser
    # step and weights are the cheaper, smaller ones.
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[spec["precision"]]
    policy_path, rm_path = str(assets / "policy"), str(assets / "reward_seqcls")
    probe = DtypeProbe()
    # Watched after each trainer is built: a trainer that deep-copies the policy into its reference would copy
    # the hook too and count the reference's forwards as the policy's.

    if algo == "ppo":
        from trl.experimental.ppo import PPOConfig, PPOTrainer

        args = PPOConfig(**common_args(spec, out), per_device_train_batch_size=spec["batch"],
                         gradient_accumulation_steps=1,
                         num_mini_batches=spec["minibatches"], num_ppo_epochs=spec["ppo_epochs"],
                         total_episodes=spec["batch"] * spec["updates"], response_length=spec["new_tokens"],
                         local_rollout_forward_batch_size=spec["batch"], stop_token="eos", missing_eos_penalty=1.0,
                         kl_coef=KL_COEF["ppo"], temperature=1.0, num_sample_generations=0)
        models = {"policy": AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype),
                  "reference": AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype),
                  "reward": AutoModelForSequenceClassification.from_pretrained(rm_path, num_labels=1, dtype=dtype),
                  "value": AutoModelForSequenceClassification.from_pretrained(rm_path, num_labels=1, dtype=dtype)}
        trainer = PPOTrainer(
            args=args, processing_class=tok, model=models["policy"], ref_model=models["reference"],
            reward_model=models["reward"], value_model=models["value"],
            train_dataset=Dataset.from_dict({"input_ids": prompts["one"]["ids"][: spec["batch"] * spec["updates"]]}),
            callbacks=[timer])
        per_step = spec["batch"]
    elif algo in ("grpo", "rloo"):
        config_cls, trainer_cls = {"grpo": (trl.GRPOConfig, trl.GRPOTrainer),
                                   "rloo": (trl.RLOOConfig, trl.RLOOTrainer)}[algo]
        args = config_cls(**common_args(spec, out), per_device_train_batch_size=spec["batch"],
                          num_generations=spec["k"], max_completion_length=spec["new_tokens"],
                          max_steps=spec["updates"], beta=KL_COEF[algo], num_iterations=1, temperature=1.0)
        n_prompts = spec["batch"] // spec["k"] * spec["updates"]
        models = {"policy": AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype),
                  "reward": AutoModelForSequenceClassification.from_pretrained(rm_path, num_labels=1, dtype=dtype)}
        trainer = trainer_cls(model=models["policy"], reward_funcs=models["reward"],
                              reward_processing_classes=[tok], args=args, processing_class=tok,
                              train_dataset=Dataset.from_list([{"prompt": t}
                                                               for t in prompts["group"]["text"][:n_prompts]]),
                              callbacks=[timer])
        models["reference"] = getattr(trainer, "ref_model", None)  # built by the trainer when β > 0
        per_step = spec["batch"]
    elif algo == "dpo":
        args = trl.DPOConfig(**common_args(spec, out), per_device_train_batch_size=spec["dpo_batch"],
                             num_train_epochs=1, beta=KL_COEF["dpo"], precompute_ref_log_probs=True)
        models = {"policy": AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype),
                  "reference": AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype)}
        trainer = trl.DPOTrainer(model=models["policy"], ref_model=models["reference"],
                                 args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok,
                                 callbacks=[timer])
        per_step = spec["dpo_batch"]
    elif algo == "rm":
        # batches of pairs of similar length, as ours forms them (steps.common.pair_batches): less padding
        args = trl.RewardConfig(**common_args(spec, out), per_device_train_batch_size=spec["rm_batch"],
                                num_train_epochs=1, center_rewards_coefficient=None,
                                train_sampling_strategy="group_by_length", length_column_name="length",
                                remove_unused_columns=False)
        models = {"reward": AutoModelForSequenceClassification.from_pretrained(rm_path, num_labels=1, dtype=dtype)}
        trainer = trl.RewardTrainer(model=models["reward"], args=args, train_dataset=Dataset.from_list(pairs),
                                    processing_class=tok, callbacks=[timer])
        # the length of a pair: its longer side, in the tokens TRL itself produced
        trainer.train_dataset = trainer.train_dataset.map(
            lambda ex: {"length": max(len(ex["chosen_ids"]), len(ex["rejected_ids"]))})
        per_step = spec["rm_batch"]
    else:
        raise SystemExit(f"unknown algorithm {algo!r}")

    for role, model in models.items():
        if model is not None:
            probe.watch(role, model)
    reset_peak()
    trainer.train()
    # the intervals start at the end of the first step, so the warm-up step is already left out
    return result(f"trl {trl.__version__}", algo, per_step, timer.times, timer.cpu_times, dtypes=probe.report())


if __name__ == "__main__":
    print("RESULT " + json.dumps(run(Path(sys.argv[1]), sys.argv[2])), flush=True)

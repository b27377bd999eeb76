"""The evaluation point of update 0 records a KL of 0 without computing it (steps/policy/loop.EvalPoints): the
policy there is the SFT policy, π_ref itself. These tests hold that premise, for a full-weight policy and for
fresh LoRA adapters, and the records of a run that relies on it."""

import json

import numpy as np
import pytest
import torch

from rlhf_lab.config import build_config, read_yaml
from rlhf_lab.models.generation import generate
from rlhf_lab.models.logprobs import sequence_kl
from rlhf_lab.runfolder import RunFolder
from rlhf_lab.steps.common import Context


@pytest.mark.parametrize("lora", [False, True])
def test_the_policy_before_its_first_update_is_its_reference_to_the_last_bit(micro_run, lora):
    raw = read_yaml(micro_run / "config.yaml")
    ctx = Context(build_config({**raw, "model": {**raw["model"], "lora": lora}}), RunFolder(micro_run))
    policy, ref = ctx.policy_and_reference()
    tok = ctx.tokenizer
    p_ids = ctx.prompt_ids(ctx.world.prompts("eval", 24, seed=1))
    resp = generate(policy, p_ids, max_new_tokens=16, temperature=1.0, eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0))
    assert any(len(r) > 1 for r in resp)
    kl = sequence_kl(policy, ref, p_ids, resp, pad_id=tok.pad_token_id, temperature=1.0)
    np.testing.assert_array_equal(kl, np.zeros(len(p_ids)))


def test_update_0_records_a_kl_of_0_and_later_points_measure_it(micro_run):
    evals = sorted((micro_run / "checkpoints" / "evals").glob("step_*.jsonl"))
    records = {int(p.stem.split("_")[1]): [json.loads(line) for line in p.open()] for p in evals}
    assert min(records) == 0 and len(records) > 1
    assert all(r["kl"] == 0.0 for r in records[0])
    assert any(r["kl"] != 0.0 for u, rows in records.items() if u > 0 for r in rows)


def test_the_evaluation_step_is_the_first_and_last_points_records_and_would_compute_the_same(micro_run, tmp_path):
    from rlhf_lab.runfolder import read_jsonl
    from rlhf_lab.steps.evaluate import run_evaluate

    final = json.loads((micro_run / "policy" / "final_eval.json").read_text())["update"]
    evals = micro_run / "checkpoints" / "evals"
    assert final > 0 and read_jsonl(micro_run / "eval" / "sft_samples.jsonl") == read_jsonl(evals / "step_00000.jsonl")
    reused = read_jsonl(micro_run / "eval" / "policy_samples.jsonl")
    assert reused == read_jsonl(evals / f"step_{final:05d}.jsonl")
    # without the points' records the step generates both models' answers itself: the same records
    import shutil

    fresh = tmp_path / "run"
    shutil.copytree(micro_run, fresh)
    shutil.rmtree(fresh / "checkpoints" / "evals")
    ctx = Context(build_config(read_yaml(fresh / "config.yaml")), RunFolder(fresh))
    out = run_evaluate(ctx)
    assert read_jsonl(fresh / "eval" / "policy_samples.jsonl") == reused
    assert read_jsonl(fresh / "eval" / "sft_samples.jsonl") == read_jsonl(micro_run / "eval" / "sft_samples.jsonl")
    assert out["policy"]["policy/n"] == len(reused)

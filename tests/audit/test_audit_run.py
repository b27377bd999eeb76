"""The audit on a finished micro run: audit.json, checkpoints, the real-model mode, the report, the
comparison, and the commands."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlhf_lab.audit import run_audit, write_comparison, write_report
from rlhf_lab.audit.core import TENSIONS
from rlhf_lab.audit.sampling import AuditContext, AuditSizes

SECTIONS = ("summary", "choices", "overoptimisation", "training", "sycophancy", "diversity", "flattening",
            "deception", "harm", "samples")


@pytest.fixture
def run_copy(micro_run, tmp_path):
    """A private copy of the micro run (the audit writes into the folder)."""
    dst = tmp_path / "run"
    shutil.copytree(micro_run, dst)
    return dst


def _estimates(metric: dict):
    for who in ("sft", "policy", "change", "rm", "pool"):
        if who in metric:
            yield who, metric[who]


def test_the_pipeline_writes_an_audit_with_every_tension(micro_run):
    audit = json.loads((micro_run / "audit.json").read_text())
    assert set(audit["tensions"]) == {m.NAME for m in TENSIONS}
    assert audit["has_world"] and audit["checkpoint"] is None
    n_metrics = 0
    for name, section in audit["tensions"].items():
        assert section["metrics"], name
        for key, metric in section["metrics"].items():
            assert {"label", "kind", "better"} <= set(metric), key
            for who, est in _estimates(metric):
                n_metrics += 1
                assert set(est) == {"value", "lo", "hi", "n"}, (key, who)
                if est["value"] is not None and est["lo"] is not None:
                    assert est["lo"] - 1e-9 <= est["value"] <= est["hi"] + 1e-9, (key, who, est)
    assert n_metrics > 60
    assert all(re.fullmatch(r"audit/[a-z]+/[a-z_0-9/]+/(sft|policy|change|rm|pool)", k) for k in audit["flat"])
    # sycophancy, harm, deception: SFT and policy answered the same probes
    for key in ("sycophancy/flip_rate", "harm/complied_jailbreak", "deception/confident_wrong"):
        t, m = key.split("/")
        metric = audit["tensions"][t]["metrics"][m]
        assert metric["sft"]["n"] == metric["policy"]["n"] > 0
    logged = [r for r in (json.loads(x) for x in (micro_run / "metrics.jsonl").read_text().splitlines())
              if r.get("phase") == "audit"]
    assert logged and "audit/sycophancy/flip_rate/policy" in logged[-1]


def test_audit_of_a_checkpoint(run_copy):
    audit = run_audit(run_copy, checkpoint=2, sizes=AuditSizes.small())
    assert audit["checkpoint"] == 2 and audit["policy_path"].endswith("step_00002")
    kl = audit["tensions"]["overoptimisation"]["metrics"]["kl"]["policy"]
    assert kl["value"] is not None and np.isfinite(kl["value"])  # measured here, not read from eval/
    assert json.loads((run_copy / "audit.json").read_text())["checkpoint"] == 2
    with pytest.raises(FileNotFoundError, match="step_00002"):
        run_audit(run_copy, checkpoint=99)


@pytest.mark.parametrize("prompts", [0, 1])
def test_audit_on_empty_and_single_sample_sets(run_copy, prompts):
    """Every probe set empty, one prompt with one sample for diversity and best-of-n: defined values, a report."""
    sizes = AuditSizes(question=0, belief=0, pushback=0, feedback=0, harmful=0, benign=0, diversity_prompts=prompts,
                       diversity_k=1, bon_n=1, relabel_pairs=0, set_size=1, embed_sets=1)
    audit = run_audit(run_copy, sizes=sizes, log=False)
    for section in audit["tensions"].values():
        for metric in section["metrics"].values():
            for _, est in _estimates(metric):
                assert est["value"] is None or np.isfinite(est["value"])
    assert audit["tensions"]["sycophancy"]["metrics"]["flip_rate"]["policy"]["value"] is None
    assert 'id="harm"' in write_report(run_copy, audit=audit).read_text()


def test_sequence_kl_matches_the_training_code(run_copy):
    from rlhf_lab.models.lm import load_lm
    from rlhf_lab.steps.evaluate import sequence_kl

    ctx = AuditContext(run_copy, sizes=AuditSizes.small())
    prompts = ctx.eval_prompts()[:12]
    p_ids = ctx.prompt_ids([ctx.prompt_text(p) for p in prompts])
    r_ids = ctx.generate("policy", p_ids, salt=1)
    ours = ctx.sequence_kl("policy", p_ids, r_ids)
    policy, _ = load_lm(run_copy / "policy")
    ref, _ = load_lm(run_copy / "sft")
    theirs = sequence_kl(policy, ref, p_ids, r_ids, pad_id=ctx.tok.pad_token_id,
                         temperature=ctx.cfg.generation.temperature)
    assert np.allclose(ours, theirs, atol=1e-4)


def test_the_audit_does_not_import_the_training_steps():
    root = Path(__file__).resolve().parents[2] / "src" / "rlhf_lab" / "audit"
    for path in root.glob("*.py"):
        assert not re.search(r"rlhf_lab\.steps|from rlhf_lab import steps", path.read_text()), path.name


def test_real_model_mode_reports_only_what_needs_no_world(run_copy):
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    cfg["model"]["path"] = str(run_copy / "sft")  # stands in for a real model …
    cfg["world"]["language"] = "templated"  # … asked in the world's own language, which no parser reads
    (run_copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    audit = run_audit(run_copy, sizes=AuditSizes.small())
    t = audit["tensions"]
    assert not audit["has_world"]
    for name in ("sycophancy", "deception", "harm"):
        assert t[name].get("skipped") and t[name]["notes"]
    over = t["overoptimisation"]["metrics"]
    assert {"proxy", "kl", "length"} <= set(over) and "gold" not in over
    assert "per_input/distinct_2" in t["diversity"]["metrics"]
    html = write_report(run_copy, audit=audit).read_text()
    assert "real model" in html


def test_report_has_every_section_and_escapes_model_text(run_copy):
    audit = json.loads((run_copy / "audit.json").read_text())
    evil = "<script>alert('x')</script> & <img src=x onerror=alert(1)>"
    audit["samples"][0]["policy"]["response"] = evil
    audit["samples"][0]["prompt"] = evil
    html = write_report(run_copy, audit=audit).read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert "<script" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from a network
    assert html.count("data:image/png;base64,") >= 6  # a plot per tension
    assert "95 % CI" in html and "within noise" in html


def test_report_without_a_policy_still_shows_the_choices(run_copy):
    shutil.rmtree(run_copy / "policy")
    (run_copy / "audit.json").unlink()
    html = write_report(run_copy).read_text()
    assert 'id="choices"' in html and "No audit yet" in html


def test_comparison_puts_runs_side_by_side(run_copy, tmp_path):
    other = tmp_path / "hindsight"
    shutil.copytree(run_copy, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["label"]["feedback"] = "hindsight"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = write_comparison([run_copy, other], tmp_path / "cmp.html")
    html = out.read_text()
    assert "label.feedback" in html and "hindsight" in html
    for m in TENSIONS:
        assert f'id="{m.NAME}"' in html
    assert 'id="choices"' in html and 'class="choice-table"' in html and 'class="differs"' in html
    assert "<script" not in html


def test_commands(run_copy, tmp_path):
    import typer
    from typer.testing import CliRunner

    from rlhf_lab.audit import cli

    app = typer.Typer()
    app.command("audit")(cli.audit)
    app.command("report")(cli.report)
    app.command("compare")(cli.compare)
    runner = CliRunner()
    r = runner.invoke(app, ["audit", str(run_copy), "--checkpoint", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((run_copy / "audit.json").read_text())["checkpoint"] == 2
    r = runner.invoke(app, ["report", str(run_copy), "-q"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "c.html"
    r = runner.invoke(app, ["compare", str(run_copy), str(run_copy), "--out", str(out), "-q"])
    assert r.exit_code == 0 and out.exists(), r.output
    r = runner.invoke(app, ["audit", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "not a run folder" in r.output
    r = runner.invoke(app, ["audit", str(run_copy), "--checkpoint", "7"])
    assert r.exit_code == 1 and "no checkpoint" in r.output


def test_the_reward_models_sycophancy_is_split_by_how_hard_the_fact_is_to_check(micro_run):
    m = json.loads((micro_run / "audit.json").read_text())["tensions"]["sycophancy"]["metrics"]
    pooled, easy, hard = (m[k]["rm"] for k in ("rm_prefers_sycophantic", "rm_prefers_sycophantic_easy",
                                               "rm_prefers_sycophantic_hard"))
    assert easy["n"] > 0 and hard["n"] > 0 and easy["n"] + hard["n"] == pooled["n"]
    # the two parts are the pooled pairs, weighted by their counts
    assert easy["value"] * easy["n"] + hard["value"] * hard["n"] == pytest.approx(pooled["value"] * pooled["n"])

"""End to end: the CLI on a micro config, and what lands in the run folder."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import yaml
from safetensors import safe_open

from tests.conftest import MICRO


def test_cli_run_micro_end_to_end(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "rlhf_lab.cli", "run", "--quiet", "--out", str(out)]
    for o in MICRO:
        args += ["--set", o]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Report:" in r.stdout + r.stderr
    for name in ("config.yaml", "metrics.jsonl", "preferences.parquet", "preferences.jsonl", "labels.sqlite",
                 "pairs.jsonl", "report.html", "sft/model.safetensors", "reward/head.safetensors",
                 "policy/model.safetensors", "eval/summary.json"):
        assert (out / name).exists(), name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["policy"]["updates"] == 3 and cfg["seed"] == 0
    state = json.loads((out / "state.json").read_text())
    assert list(state["done"]) == ["sft", "sample", "label", "reward", "policy", "evaluate"]


def test_run_folder_contents(micro_run):
    metrics = [json.loads(line) for line in (micro_run / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*metrics)
    for k in ("sft/loss", "reward/accuracy", "objective/kl", "objective/scores", "ppo/policy/approxkl_avg",
              "ppo/policy/clipfrac_avg", "ppo/val/error", "ppo/policy/entropy_avg", "eval/gold_utility",
              "eval/proxy_reward", "eval/kl"):
        assert k in keys, k
    # gold utility is reported beside the proxy at every evaluation point, KL finite
    evals = [m for m in metrics if m.get("phase") == "policy" and "eval/proxy_reward" in m]
    assert [m["step"] for m in evals] == [0, 2, 3]
    for m in evals:
        assert "eval/gold_utility" in m and m["eval/kl"] == m["eval/kl"] and abs(m["eval/kl"]) < 1e6
    prefs = pq.read_table(micro_run / "preferences.parquet").to_pylist()
    assert prefs and {"prompt", "chosen", "rejected", "annotator_id", "annotator_group", "strength"} <= set(prefs[0])
    assert all(p["chosen"] != p["rejected"] for p in prefs)
    with safe_open(str(micro_run / "policy" / "model.safetensors"), "pt") as f:
        assert len(list(f.keys())) > 0
    html = (micro_run / "report.html").read_text()
    for section in ('id="summary"', 'id="choices"', 'id="training"', 'id="samples"'):
        assert section in html


def test_policy_parameters_changed(micro_run):
    import torch
    from safetensors.torch import load_file

    sft = load_file(str(micro_run / "sft" / "model.safetensors"))
    pol = load_file(str(micro_run / "policy" / "model.safetensors"))
    changed = [k for k in sft if not torch.equal(sft[k], pol[k])]
    assert len(changed) > len(sft) // 2


def test_labels_in_the_store(micro_run):
    from rlhf_lab.annotate.store import AnnotationStore

    store = AnnotationStore.for_run(micro_run)
    project = store.project("run")
    rows = store.label_rows(project.id)
    pairs = (micro_run / "pairs.jsonl").read_text().splitlines()
    assert len(rows) == len(pairs)  # overlap 1
    r = rows[0]
    assert r["annotator_kind"] == "simulated" and r["annotator_group"] in ("detailed", "concise")
    assert r["choice"] in ("a", "b", "tie") and r["created_at"]
    store.close()


def test_rerunning_one_step_forgets_later_ones(micro_run, tmp_path):
    import shutil

    from rlhf_lab import step
    from rlhf_lab.runfolder import RunFolder

    copy = tmp_path / "copy"
    shutil.copytree(micro_run, copy)
    step("label", copy)
    done = RunFolder(copy).state()["done"]
    assert "label" in done and "reward" not in done and "policy" not in done

"""Experiment trackers (`--report-to`): the files TensorBoard, W&B (offline) and MLflow write hold the same
metrics as metrics.jsonl, read back with each tracker's own reader."""

import json
import os
import struct
import subprocess
import sys

import pytest

from tests.conftest import MICRO

pytest.importorskip("tensorboard", reason="the trackers extra is not installed (pip install 'rlhf-lab[trackers]')")
pytest.importorskip("wandb", reason="the trackers extra is not installed (pip install 'rlhf-lab[trackers]')")


def _env() -> dict:
    """The test's environment without the user's tracker settings (they would send files elsewhere)."""
    drop = ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_lab.cli", *args], capture_output=True, text=True,
                          timeout=900, env=_env())


def wandb_records(path):
    """The records of a .wandb file: W&B's LevelDB-style log (a 7-byte header `:W&B`, 0xBEE1, version 0; then
    32 KiB blocks of chunks, each a 7-byte header of checksum, length and type: 1 whole, 2 first, 3 middle,
    4 last), each record a `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    block, head = 32768, 7
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:head])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a .wandb file"
    pos, parts = head, b""
    while pos + head <= len(data):
        if block - pos % block < head:  # the tail of a block too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + head])
        if kind == 0:  # zero padding up to the end of the block
            pos += block - pos % block
            continue
        parts += data[pos + head:pos + head + length]
        pos += head + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def wandb_history(run_dir) -> list[dict]:
    """The history rows an offline W&B run logged."""
    (path,) = run_dir.glob("*.wandb")
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item}
            for rec in wandb_records(path) if rec.WhichOneof("record_type") == "history"]


def test_tensorboard_and_wandb_hold_the_metrics_of_metrics_jsonl(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    sets = [a for o in MICRO for a in ("--set", o)]
    r = _cli("run", "--quiet", "--out", str(out), *sets, "--report-to", "wandb", "--report-to", "tensorboard")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    policy = [r for r in rows if r["phase"] == "policy"]
    kl = {r["step"]: r["objective/kl"] for r in policy if "objective/kl" in r}
    gold = {r["step"]: r["eval/gold_utility"] for r in policy if "eval/gold_utility" in r}
    (audit,) = [r for r in rows if r["phase"] == "audit"]
    audit_key = "audit/overoptimisation/kl/policy"
    assert set(kl) == {1, 2, 3} and set(gold) == {0, 2, 3} and audit_key in audit

    # TensorBoard: its event files, read by its own reader; float32 there
    events = EventAccumulator(str(out / "trackers" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"objective/kl", "eval/gold_utility", "sft/loss", "reward/accuracy", audit_key} <= set(tags)
    assert not [t for t in tags if t.startswith("step/")]  # W&B's step keys are W&B's alone
    for key, want in (("objective/kl", kl), ("eval/gold_utility", gold)):
        got = {e.step: e.value for e in events.Scalars(key)}
        assert got == pytest.approx(want, rel=1e-6), key
    assert events.Scalars(audit_key)[-1].value == pytest.approx(audit[audit_key], rel=1e-6)

    # W&B, offline, under the run folder: each key drawn against its phase's step
    (run_dir,) = (out / "trackers" / "wandb").glob("offline-run-*")
    history = wandb_history(run_dir)
    for key, want in (("objective/kl", kl), ("eval/gold_utility", gold)):
        got = {h["step/policy"]: h[key] for h in history if key in h}
        assert got == pytest.approx(want, rel=1e-12), key
    (logged_audit,) = [h for h in history if audit_key in h]
    assert logged_audit[audit_key] == pytest.approx(audit[audit_key], rel=1e-12)

    # the samples table of each evaluation point: the per-prompt records the audit reads
    tables = sorted((run_dir / "files" / "media" / "table" / "eval").glob("samples_*.table.json"))
    assert len(tables) == len(gold)
    evals = {s: [json.loads(line) for line in (out / "checkpoints" / "evals" / f"step_{s:05d}.jsonl").open()]
             for s in gold}
    seen = set()
    for path in tables:
        table = json.loads(path.read_text())
        cols = table["columns"]
        assert {"prompt", "completion", "proxy", "gold"} <= set(cols)
        logged = [dict(zip(cols, row, strict=True)) for row in table["data"]]
        step = logged[0]["step"]
        seen.add(step)
        assert [(t["prompt"], t["completion"], t["gold"]) for t in logged] == \
            [(e["prompt"], e["response"], e["gold"]) for e in evals[step]]
    assert seen == set(gold)

    # `rlhf-lab audit RUN --checkpoint 2` sends its audit/… to the run's trackers, at step 2
    r = _cli("audit", str(out), "--checkpoint", "2", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    (again,) = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                if r["phase"] == "audit" and r["checkpoint"] == 2]
    events = EventAccumulator(str(out / "trackers" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert {e.step: e.value for e in events.Scalars(audit_key)}[2] == pytest.approx(again[audit_key], rel=1e-6)
    assert len(list((out / "trackers" / "wandb").glob("offline-run-*"))) == 2

    # trackers are not the experiment: the same config without them continues the run, nothing redone
    from rlhf_lab import load_config, run

    state = (out / "state.json").read_text()
    run(load_config(overrides=MICRO), out=out, report=False)
    assert (out / "state.json").read_text() == state
    assert "report_to: []" in (out / "config.yaml").read_text()


def test_a_missing_tracker_package_is_one_line_before_anything_runs(tmp_path):
    out = tmp_path / "run"
    # `import wandb` fails as if it were not installed (a None in sys.modules is Python's way to block it)
    code = ("import sys; sys.modules['wandb'] = None; from rlhf_lab.cli import app; "
            f"app(['run', '--quiet', '--out', {str(out)!r}, '--report-to', 'wandb'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "logging.report_to: wandb is not installed" in lines[0] and \
        "rlhf-lab[trackers]" in lines[0], r.stderr
    assert not out.exists()


def test_an_unknown_tracker_names_the_key(tmp_path):
    r = _cli("run", "--quiet", "--out", str(tmp_path / "run"), "--report-to", "tensorbored")
    assert r.returncode == 2 and "logging.report_to" in r.stderr and "tensorbored" in r.stderr
    assert not (tmp_path / "run").exists()


def test_mlflow_file_store_under_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the trackers extra is not installed (pip install 'rlhf-lab[trackers]')")
    from mlflow.tracking import MlflowClient

    from rlhf_lab import load_config, trackers
    from rlhf_lab.runfolder import RunFolder

    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(k, "")  # so that the teardown restores each as it was
        monkeypatch.delenv(k)
    run = RunFolder(tmp_path / "run")
    cfg = load_config(overrides=["logging.report_to=[mlflow]", "policy.kl_coef=0.07"])
    records = [{"step": 1, "phase": "policy", "objective/kl": 0.25, "ppo/approxkl": 1e-3},
               {"step": 2, "phase": "policy", "objective/kl": 0.5, "eval/gold_utility/family/open": -0.1},
               {"phase": "audit", "checkpoint": None, "audit/harm/refusal/policy": 0.75}]
    with trackers.session(run.root, cfg):
        for rec in records:
            run.log(rec)
    run.log({"step": 3, "phase": "policy", "objective/kl": 9.0})  # after the session: metrics.jsonl only
    assert len(run.metrics()) == 4

    client = MlflowClient((run.root / "trackers" / "mlruns").resolve().as_uri())
    (mlrun,) = client.search_runs([client.get_experiment_by_name("rlhf-lab").experiment_id])
    history = client.get_metric_history(mlrun.info.run_id, "objective/kl")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.25), (2, 0.5)]
    assert mlrun.data.metrics["audit/harm/refusal/policy"] == 0.75
    assert mlrun.data.metrics["eval/gold_utility/family/open"] == -0.1
    assert "checkpoint" not in mlrun.data.metrics and "step" not in mlrun.data.metrics
    assert mlrun.data.params["policy.kl_coef"] == "0.07"

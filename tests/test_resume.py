"""Stop and resume: a run killed with SIGKILL in the middle of policy optimisation, then resumed, ends with
the same final metrics as an uninterrupted run with the same seed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import MICRO

SETTINGS = [*MICRO, "policy.updates=8", "policy.checkpoint_every=2", "eval.every=4"]


def _args(*extra):
    return [sys.executable, "-m", "rlhf_lab.cli", *extra]


def _final_eval(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("phase") == "policy" and "eval/proxy_reward" in r]
    return evals[-1], [r for r in rows if r.get("phase") == "policy" and "objective/kl" in r]


def test_sigkill_during_ppo_then_resume_matches_uninterrupted(tmp_path):
    from rlhf_lab import load_config, run, step
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    base = tmp_path / "base"
    cfg = load_config(overrides=SETTINGS)
    # Steps 0–3 once; both runs start policy optimisation from the same folder.
    for step_name in ("sft", "sample", "label", "reward"):
        step(step_name, base, cfg)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    shutil.copytree(base, whole)
    shutil.copytree(base, killed)

    run(out=whole, resume=True, report=False)

    proc = subprocess.Popen(_args("run", "--quiet", "--resume", str(killed)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpt = killed / "policy_ckpt" / "state.json"
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((killed / "state.json").read_text())
    assert "policy" not in state["done"]
    assert not (killed / "policy" / "model.safetensors").exists()

    run(out=killed, resume=True, report=False)
    a, a_steps = _final_eval(whole)
    b, b_steps = _final_eval(killed)
    for key in ("eval/proxy_reward", "eval/gold_utility", "eval/kl"):
        assert abs(a[key] - b[key]) < 1e-4, (key, a[key], b[key])
    # every update logged exactly once, in order
    assert [s["step"] for s in b_steps] == list(range(1, 9))
    for x, y in zip(a_steps, b_steps, strict=True):
        assert abs(x["objective/kl"] - y["objective/kl"]) < 1e-4


def test_partial_files_are_never_taken_for_finished(tmp_path):
    from rlhf_lab.runfolder import RunFolder, atomic_dir, atomic_write_text

    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("crash")
    assert not (tmp_path / "model").exists()
    assert target.read_text() == "old"
    run = RunFolder(tmp_path)
    assert not run.is_done("sft")
    (tmp_path / "metrics.jsonl").write_text('{"a": 1}\n{"b": ')  # a line torn by a crash
    assert run.metrics() == [{"a": 1}]

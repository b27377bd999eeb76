"""policy.early_warning on micro runs: `warn` logs what the detectors say of the logged history (the same
answer as running them afterwards), and `stop` ends training at the warning and saves, as the policy, the
weights of the last evaluation point before it — the tensors an uninterrupted run had there."""

import json
import shutil

from safetensors.torch import load_file

from rlhf_lab import early_warning
from tests.conftest import MICRO

SETTINGS = [*MICRO, "policy.updates=6", "eval.every=2", "policy.checkpoint_every=10"]


def _policy_records(run_dir) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("phase") == "policy"]


def test_warn_logs_the_detectors_verdict_and_stop_saves_the_policy_before_the_warning(tmp_path):
    from rlhf_lab import load_config, step
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    base = tmp_path / "base"
    low = {"kl_budget": 0.0, "length_drift": 0.05, "repetition": 0.02, "opener_share": 0.02, "distinct_n": 0.02}
    warn_cfg = load_config(overrides=[*SETTINGS, "policy.early_warning=warn",
                                      f"policy.early_warning_thresholds={json.dumps(low)}"])
    for name in ("sft", "sample", "label", "reward"):
        step(name, base, warn_cfg)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    shutil.copytree(base, whole)
    shutil.copytree(base, stopped)

    # 1. warn: every update is trained; the warnings logged are what the detectors say of the history afterwards
    step("policy", whole, warn_cfg)
    rows = _policy_records(whole)
    assert max(r["step"] for r in rows if "objective/kl" in r) == 6
    logged = early_warning.warnings_logged(rows)
    history = [r for r in rows if not any(k.startswith("warning/") for k in r)]
    assert logged, "thresholds this low fire on a micro run"
    assert logged == early_warning.check(history, thresholds=low)

    # 2. stop on a KL budget that the run first passes at update u > 2, so an evaluation point after 0 precedes it
    kl = dict(early_warning.series(history, "objective/kl"))
    u = max(t for t in kl if t > 2 and kl[t] > max(kl[s] for s in kl if s < t))
    budget = max(kl[s] for s in kl if s < u)
    saved = max(p for p in (2, 4) if p < u)
    stop_cfg = load_config(overrides=[*SETTINGS, "policy.early_warning=stop",
                                      "policy.early_warning_detectors=[kl_budget]",
                                      f"policy.early_warning_thresholds={{kl_budget: {budget!r}}}"])
    step("policy", stopped, stop_cfg)
    rows_s = _policy_records(stopped)
    assert max(r["step"] for r in rows_s if "objective/kl" in r) == u  # training ended at the warning
    assert early_warning.warnings_logged(rows_s) == {"kl_budget": u}
    note = json.loads((stopped / "policy" / "early_warning.json").read_text())
    assert note["stopped_at"] == u and note["saved_update"] == saved

    # the saved policy is the uninterrupted run's at that evaluation point, tensor for tensor, not its last one
    got = load_file(str(stopped / "policy" / "model.safetensors"))
    want = load_file(str(whole / "checkpoints" / f"step_{saved:05d}" / "model.safetensors"))
    final = load_file(str(whole / "policy" / "model.safetensors"))
    assert got.keys() == want.keys()
    assert all((got[k] == want[k]).all() for k in got)
    assert any((got[k] != final[k]).any() for k in got)
    final_eval = json.loads((stopped / "policy" / "final_eval.json").read_text())
    at_saved = next(r for r in rows if r["step"] == saved and "eval/proxy_reward" in r)
    assert final_eval["eval/proxy_reward"] == at_saved["eval/proxy_reward"]
    assert "eval/gold_utility" in final_eval  # the evaluation of that point, whole (gold is for reading, not deciding)


def test_a_rerun_from_the_start_does_not_read_the_previous_runs_records(tmp_path):
    """metrics.jsonl keeps a finished policy step's records until its rerun commits: a rerun from update 0 must
    not take them (or their warnings) for its own; a resumed one takes its own up to the checkpoint."""
    from types import SimpleNamespace

    from rlhf_lab import load_config
    from rlhf_lab.runfolder import RunFolder
    from rlhf_lab.steps.policy.warning import Watch

    run = RunFolder(tmp_path)
    for r in [{"step": 1, "objective/kl": 9.0}, {"step": 1, "warning/kl_budget": 1}, {"step": 3, "objective/kl": 9.0}]:
        run.log({"phase": "policy", **r})
    run.log({"phase": "reward", "reward/accuracy": 0.7})
    ctx = SimpleNamespace(cfg=load_config(overrides=["policy.early_warning=warn"]), run=run, is_main=True,
                          accelerator=SimpleNamespace(num_processes=1))
    fresh = Watch(ctx, start=0)
    assert fresh.history == [] and fresh.warned == {}
    resumed = Watch(ctx, start=2)
    assert [r["step"] for r in resumed.history] == [1, 1] and resumed.warned == {"kl_budget": 1}
    # a resumed run does not log a warning it logged before; a fresh one logs its own
    resumed.observe(2, {"objective/kl": 9.5})
    assert resumed.check(2) is False and len(run.phase_metrics("policy")) == 3
    fresh.observe(1, {"objective/kl": 5.0})
    assert fresh.check(1) is False and fresh.warned == {"kl_budget": 1}  # warn: logged, never a stop
    assert run.phase_metrics("policy")[-1] == {"step": 1, "phase": "policy", "warning/kl_budget": 1}
    off = Watch(SimpleNamespace(**{**vars(ctx), "cfg": load_config(overrides=["policy.early_warning=off"])}))
    off.observe(1, {"objective/kl": 50.0})
    assert off.check(1) is False and off.history == []

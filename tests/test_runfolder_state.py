"""The run folder's bookkeeping tells the truth: a failed step changes nothing, a rerun step makes what was
made from its old outputs stale (refused with the command that refreshes it), new preferences from the web
app count as a new label step, and commands on a folder without the results they need fail in one line."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from rlhf_lab.config import Config, ConfigError, load_config
from rlhf_lab.runfolder import RunFolder, write_json

# A run folder as the pipeline leaves it after steps 0–3, without their (here unneeded) outputs.
DONE_TO_REWARD = {"done": {"sft": {}, "sample": {}, "label": {}, "reward": {}}}


def _cli(*args: str):
    from rlhf_lab.cli import app

    return CliRunner().invoke(app, list(args))


def _one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _folder_bytes(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def reward_done(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(Config().to_yaml())
    write_json(run / "state.json", DONE_TO_REWARD)
    return run


# -- issue 15, security 8: a failed step leaves the folder as it was -------------------------------------------------


def test_failed_step_leaves_config_and_state_as_they_were(reward_done):
    before = _folder_bytes(reward_done)
    r = _cli("label", str(reward_done), "--set", "label.source=import",
             "--set", f"label.import_path={reward_done / 'missing.jsonl'}")
    assert "missing.jsonl" in _one_line_error(r)
    assert _folder_bytes(reward_done) == before  # config.yaml not rewritten, reward still done


def test_run_into_a_folder_made_with_another_config_is_refused(reward_done):
    from rlhf_lab import run

    before = _folder_bytes(reward_done)
    with pytest.raises(ConfigError, match=r"another config.*--resume"):
        run(load_config(overrides=["seed=1"]), out=reward_done, report=False)
    assert _folder_bytes(reward_done) == before


# -- defect 9: commands on folders without what they need ------------------------------------------------------------


def test_a_step_on_an_empty_folder_writes_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("evaluate", str(empty))
    assert list(empty.iterdir()) == []  # no config.yaml, no state.json
    line = _one_line_error(r)
    assert "evaluate needs sft, sample, label, reward, policy" in line and "rlhf-lab run --out" in line


def test_report_without_results_fails_in_one_line(tmp_path):
    run = tmp_path / "run"  # a config and nothing else, as a run stopped during SFT leaves it
    run.mkdir()
    (run / "config.yaml").write_text(Config().to_yaml())
    line = _one_line_error(_cli("report", str(run), "-q"))
    assert "nothing to report" in line and f"rlhf-lab run --resume {run}" in line
    assert not (run / "report.html").exists()


def test_no_user_groups_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"world\.user_groups"):
        load_config(overrides=["world.user_groups=[]"])
    assert "world.user_groups" in _one_line_error(_cli("config", "show", "--set", "world.user_groups=[]"))


# -- defect 9: stale results after a step reruns ---------------------------------------------------------------------


@pytest.fixture
def run_copy(micro_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(micro_run, copy)
    return copy


def _assert_audit_refused(run, other):
    """report, compare and audit refuse the run, name what is stale and how to refresh it, write nothing."""
    report = (run / "report.html").read_bytes()
    line = _one_line_error(_cli("report", str(run), "-q"))
    assert f"{run / 'audit.json'} is stale" in line and f"rlhf-lab run --resume {run}" in line
    line = _one_line_error(_cli("compare", str(other), str(run), "--out", str(run.parent / "cmp.html"), "-q"))
    assert "audit.json is stale" in line and not (run.parent / "cmp.html").exists()
    line = _one_line_error(_cli("audit", str(run), "-q"))
    assert "policy step is not done" in line
    (run / "audit.json").unlink()  # without an audit, report would audit policy/: made from the old inputs
    line = _one_line_error(_cli("report", str(run), "-q"))
    assert "policy step is not done" in line and f"rlhf-lab run --resume {run}" in line
    assert (run / "report.html").read_bytes() == report and not (run / "audit.json").exists()


def test_rerunning_a_step_makes_later_results_stale(run_copy, micro_run):
    from rlhf_lab import step
    from rlhf_lab.ui import set_quiet

    set_quiet(True)
    folder = RunFolder(run_copy)
    before = folder.state()["done"]
    old_reward = folder.phase_metrics("reward")
    assert (run_copy / "policy_ckpt").exists() and old_reward and folder.phase_metrics("policy")
    step("reward", run_copy)
    # the report's curves and the audit read metrics.jsonl: no record of the old reward model, policy or audit
    new_reward = folder.phase_metrics("reward")
    assert len(new_reward) == len(old_reward)  # replaced, not doubled
    assert not any(folder.phase_metrics(p) for p in ("policy", "evaluate", "audit"))
    done = RunFolder(run_copy).state()["done"]
    assert list(done) == ["sft", "sample", "label", "reward"]
    assert done["reward"]["version"] > before["evaluate"]["version"]
    assert done["reward"]["inputs"] == {s: before[s]["version"] for s in ("sft", "sample", "label")}
    # the policy's resume point was trained against the old reward model: resuming from it would mix the two
    assert not (run_copy / "policy_ckpt").exists() and not (run_copy / "checkpoints").exists()
    _assert_audit_refused(run_copy, micro_run)


def test_annotation_export_into_the_run_counts_as_new_labels(run_copy, micro_run):
    from rlhf_lab.annotate.cli import annotate_app

    before = RunFolder(run_copy).state()["done"]
    r = CliRunner().invoke(annotate_app, ["export", "--run", str(run_copy)])
    assert r.exit_code == 0, r.output
    done = RunFolder(run_copy).state()["done"]
    assert list(done) == ["sft", "sample", "label"]
    assert done["label"]["version"] > before["evaluate"]["version"]
    assert done["label"]["preferences_from"] == "annotation export"
    assert not any(RunFolder(run_copy).phase_metrics(p) for p in ("reward", "policy", "evaluate", "audit"))
    _assert_audit_refused(run_copy, micro_run)


def test_admin_export_into_the_run_counts_as_new_labels(reward_done, tmp_path):
    from tests.annotate.conftest import World

    (reward_done / "policy_ckpt").mkdir()  # a resume point trained on the old preferences
    w = World(f"sqlite:///{tmp_path / 'labels.sqlite'}", reward_done)
    try:
        w.label(w.alice)
        r = w.admin.post_form(f"/admin/projects/{w.pid}/export-to-run")
        assert r.status_code == 303, r.text
    finally:
        w.app.state.ctx.writer.close()
        w.store.close()
    assert (reward_done / "preferences.parquet").is_file()
    state = json.loads((reward_done / "state.json").read_text())
    assert list(state["done"]) == ["sft", "sample", "label"]
    assert state["done"]["label"]["preferences_from"] == "annotation export"
    assert not (reward_done / "policy_ckpt").exists()

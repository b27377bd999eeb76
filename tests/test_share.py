"""Steps shared between runs (issue 13): what a step is made from (runfolder.step_inputs) covers every config
section its code reads; a run started from a copy of another run's shared steps is the run made from scratch;
a copy refuses steps made under another config and leaves nothing behind when interrupted."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from rlhf_lab.config import Config, load_config
from rlhf_lab.runfolder import STEPS, RunFolder, copy_steps, step_inputs, write_json
from rlhf_lab.sharing import share
from rlhf_lab.sweep import SweepRun, run_runs
from tests.conftest import MICRO

STEPS_DIR = Path(__file__).resolve().parents[1] / "src" / "rlhf_lab" / "steps"
# the code of each step; common.py and run_models.py serve every step, so they may read only what SFT reads
CODE = {"sft": ["sft.py", "common.py", "../models/run_models.py"], "sample": ["sample.py"], "label": ["label.py"],
        "reward": ["reward.py", "reward_sets.py"], "policy": ["policy/*.py"], "evaluate": ["evaluate.py"]}


def _config(*sets: str) -> dict:
    return yaml.safe_load(load_config(overrides=[*MICRO, *sets]).to_yaml())


def test_step_inputs_cover_every_section_the_steps_code_reads():
    sections = set(Config.model_fields)
    for step, patterns in CODE.items():
        read = {name for pattern in patterns for path in STEPS_DIR.glob(pattern)
                for name in re.findall(r"\bcfg\.(\w+)\b", path.read_text()) if name in sections}
        assert read, step  # the pattern finds the code
        assert read <= set(step_inputs(_config(), step)), (step, read - set(step_inputs(_config(), step)))


def test_step_inputs_separate_runs_where_a_step_reads_a_difference():
    base, labels, world = _config(), _config("label.p_know=1"), _config("world.n_places=9")
    assert step_inputs(base, "sample") == step_inputs(labels, "sample")
    assert step_inputs(base, "label") != step_inputs(labels, "label")
    assert step_inputs(base, "sft") != step_inputs(world, "sft")
    assert step_inputs(base, "sft") != step_inputs(_config("seed=1"), "sft")
    assert step_inputs(base, "sft") == step_inputs(_config("logging.report_to=[tensorboard]"), "sft")


def test_share_makes_each_common_prefix_once_and_chains_them():
    runs = [SweepRun(name, {"seed": 0, **sets}) for name, sets in (
        ("a", {}), ("b", {"policy.algorithm": "best_of_n"}), ("c", {"label.p_know": 1}),
        ("d", {"world.n_places": 9}), ("e", {"sample.n_prompts": 300}), ("f", {"sample.n_prompts": 300,
                                                                             "reward.models": "ensemble"}))]
    out, lines = share(runs)
    parts = {r.name: r for r in out if r.until != "evaluate"}
    by = {r.name: r for r in out if r.until == "evaluate"}
    assert sorted(p.until for p in parts.values()) == ["label", "reward", "sample", "sft"]
    assert by["d"].start_from is None  # another world: nothing in common
    assert parts[by["a"].start_from].until == "reward" and by["b"].start_from == by["a"].start_from
    assert parts[by["c"].start_from].until == "sample"
    assert parts[by["e"].start_from].until == "label" and by["f"].start_from == by["e"].start_from
    # the chain: a's reward part (a and b also agree on label: no part of its own) starts from the sample part,
    # that from the SFT part
    chain, name = [], by["a"].start_from
    while name:
        chain.append(parts[name].until)
        name = parts[name].start_from
    assert chain == ["reward", "sample", "sft"]
    assert parts[by["e"].start_from].start_from == parts[by["c"].start_from].start_from  # the SFT part
    assert lines[-1] == "  seed 0: 6 runs; sharing saves 4 sft runs, 3 sample runs, 2 label runs, 1 reward run"
    # a run whose folder exists resumes on its own; one alone shares nothing
    out, _ = share(runs, started={"a", "b", "c", "e"})
    assert all(r.until == "evaluate" and r.start_from is None for r in out)


def test_the_scoreboards_settings_share_sft_and_samples_made_under_its_base_config():
    """The early-warning scoreboard's settings differ only in who labels: one part per seed makes SFT and samples
    for its three runs. Its runs' configs are their overrides
    over the scoreboard's base, so the shared parts are keyed by the base too (a changed base never reuses them)."""
    from rlhf_lab.warnings_scoreboard import SETTINGS

    runs = [SweepRun(f"{s}_seed-{seed}", {**sets, "seed": seed}) for s, sets in SETTINGS.items() for seed in (0, 1)]
    out, lines = share(runs, base=_config())
    parts = [r for r in out if r.until != "evaluate"]
    assert sorted((p.until, p.name.split("_seed-")[1]) for p in parts) == [("sample", "0"), ("sample", "1")]
    assert all(r.start_from and r.start_from.startswith("shared/sample-") for r in out if r.until == "evaluate")
    assert "  seed 0: 3 runs; sharing saves 2 sft runs, 2 sample runs" in lines
    other, _ = share(runs, base=_config("sft.epochs=3"))
    assert {p.name for p in parts}.isdisjoint(r.name for r in other if r.until != "evaluate")


def _stopped_after_sample(root: Path, config: dict) -> Path:
    """A run folder as `run --until sample` leaves it (hand-made outputs)."""
    root.mkdir(parents=True)
    (root / "sft").mkdir()
    (root / "sft" / "model.safetensors").write_bytes(b"weights")
    (root / "samples.jsonl").write_text('{"x": 1}\n')
    (root / "metrics.jsonl").write_text('{"phase": "sft", "loss": 1.0}\n')
    (root / ".samples.jsonl.tmp-99").write_text("half")  # a write a crash cut short
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    write_json(root / "state.json", {"done": {"sft": {"version": 1, "inputs": {}, "seconds": 3.0},
                                              "sample": {"version": 2, "inputs": {"sft": 1}, "seconds": 1.0}},
                                     "last_version": 2})
    return root


def test_copy_steps_copies_outputs_and_bookkeeping_with_its_own_config(tmp_path):
    src = _stopped_after_sample(tmp_path / "src", _config())
    text = yaml.safe_dump(_config("label.p_know=1"))
    copy_steps(src, tmp_path / "dst", config_yaml=text, files={"sweep_config.yaml": text})
    dst = RunFolder(tmp_path / "dst")
    assert dst.state() == RunFolder(src).state() and dst.versions() == {"sft": 1, "sample": 2}
    assert (dst / "sft" / "model.safetensors").read_bytes() == b"weights"
    assert dst.metrics() == [{"phase": "sft", "loss": 1.0}]
    assert dst.config_path.read_text() == text == (dst / "sweep_config.yaml").read_text()
    assert sorted(p.name for p in dst.root.iterdir()) == ["config.yaml", "metrics.jsonl", "samples.jsonl", "sft",
                                                          "state.json", "sweep_config.yaml"]


def test_copy_steps_refuses_steps_made_under_another_config_or_a_finished_run(tmp_path):
    src = _stopped_after_sample(tmp_path / "src", _config())
    with pytest.raises(ValueError, match="ran under another sample config"):
        copy_steps(src, tmp_path / "dst", config_yaml=yaml.safe_dump(_config("sample.k=3")))
    state = RunFolder(src).state()
    write_json(src / "state.json", {**state, "done": {**state["done"], "reward": {}}, "outputs": {"audit.json": {}}})
    with pytest.raises(ValueError, match="not a run stopped after a step"):
        copy_steps(src, tmp_path / "dst", config_yaml=yaml.safe_dump(_config()))
    assert not (tmp_path / "dst").exists()


def test_an_interrupted_copy_leaves_no_run_folder(tmp_path, monkeypatch):
    src = _stopped_after_sample(tmp_path / "src", _config())
    real, copied = shutil.copy2, []

    def copy_then_interrupt(a, b, **kw):
        copied.append(b)
        if len(copied) == 2:
            raise KeyboardInterrupt
        return real(a, b, **kw)

    monkeypatch.setattr(shutil, "copy2", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        copy_steps(src, tmp_path / "dst", config_yaml=yaml.safe_dump(_config()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # neither dst nor its temporary folder
    monkeypatch.setattr(shutil, "copy2", real)
    copy_steps(src, tmp_path / "dst", config_yaml=yaml.safe_dump(_config()))  # the next invocation makes it
    assert RunFolder(tmp_path / "dst").versions() == {"sft": 1, "sample": 2}


def test_a_run_started_from_shared_steps_equals_the_run_from_scratch(tmp_path, monkeypatch):
    """Two micro runs sharing SFT and samples (they differ in who labels): the one made from the shared part,
    which ran under the other run's config, ends with the same reward model, policy and evaluation records as
    the same run made from scratch, at one thread."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in MICRO)}
    runs = [SweepRun("a", {**overrides, "seed": 0}), SweepRun("b", {**overrides, "seed": 0, "label.p_know": 1})]
    shared, _ = share(runs)
    part = next(r for r in shared if r.until != "evaluate")
    assert part.until == "sample" and part.overrides == runs[0].overrides
    run_runs("shared", {}, shared, tmp_path / "shared", source="test", jobs=2, report=False, echo=lambda _: None)
    run_runs("scratch", {}, [runs[1]], tmp_path / "scratch", source="test", report=False, echo=lambda _: None)
    made, scratch = tmp_path / "shared" / "b", tmp_path / "scratch" / "b"
    assert (made / "config.yaml").read_text() == (scratch / "config.yaml").read_text()
    for name in ("policy/model.safetensors", "reward/head.safetensors", "reward/eval.jsonl", "samples.jsonl",
                 "preferences.jsonl", "eval/policy_samples.jsonl", "sft/model.safetensors"):
        assert (made / name).read_bytes() == (scratch / name).read_bytes(), name
    for path in sorted((scratch / "checkpoints" / "evals").glob("*.jsonl")):
        assert (made / "checkpoints" / "evals" / path.name).read_bytes() == path.read_bytes(), path.name
    assert json.loads((made / "reward" / "metrics.json").read_text()) == \
        json.loads((scratch / "reward" / "metrics.json").read_text())
    timed = {"ppo/elapsed_s"}  # wall time, the one field that differs between two runs of one config
    assert [{k: v for k, v in r.items() if k not in timed} for r in RunFolder(made).metrics()] == \
        [{k: v for k, v in r.items() if k not in timed} for r in RunFolder(scratch).metrics()]  # SFT's records too
    mine, theirs = RunFolder(made).state(), RunFolder(scratch).state()
    assert [(s, r["version"], r["inputs"]) for s, r in mine["done"].items()] == \
        [(s, r["version"], r["inputs"]) for s, r in theirs["done"].items()]
    assert list(mine["done"]) == list(STEPS) and mine["last_version"] == theirs["last_version"]


def test_run_until_a_step_that_does_not_exist_is_one_line_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from rlhf_lab.cli import app

    for args in (["--until", "rewards"], ["--until", "sft", "--seeds", "0-1"]):
        result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "run"), *args])
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "--until" in lines[0], result.output
    assert not (tmp_path / "run").exists()


def test_a_run_whose_shared_part_was_made_under_another_config_fails_by_name_and_is_not_made(tmp_path):
    """A part on disk (same name) whose steps ran under another config: the run is refused before any process
    starts, and its folder is not made, so a later invocation cannot take it for a started run."""
    part = SweepRun("shared/sample-x_seed-0", {"seed": 0}, until="sample")
    run = SweepRun("b", {"seed": 0, "label.p_know": 1}, start_from=part.name)
    _stopped_after_sample(tmp_path / "shared" / "sample-x_seed-0", yaml.safe_load(load_config(
        overrides=["sample.k=3"]).to_yaml()))
    said = []
    with pytest.raises(RuntimeError, match=r"1 run\(s\) failed: b;"):
        run_runs("t", {}, [part, run], tmp_path, source="test", echo=said.append)
    assert any(line.startswith("  FAILED b: ") and "another sample config" in line for line in said), said
    assert not (tmp_path / "b").exists()


def test_a_shared_part_with_an_unreadable_config_fails_its_runs_by_file_not_the_whole_command(tmp_path):
    """A corrupted part (its config.yaml cut short, or not a mapping): each run that starts from it fails with a
    line naming the file, the others go on, and no folder is made for it."""
    part = SweepRun("shared/sample-x_seed-0", {"seed": 0}, until="sample")
    run = SweepRun("b", {"seed": 0, "label.p_know": 1}, start_from=part.name)
    folder = _stopped_after_sample(tmp_path / "shared" / "sample-x_seed-0", _config())
    for text in ("seed: [0\n", "- a list\n"):
        (folder / "config.yaml").write_text(text)
        said = []
        with pytest.raises(RuntimeError, match=r"1 run\(s\) failed: b;"):
            run_runs("t", {}, [part, run], tmp_path, source="test", echo=said.append)
        assert any(line.startswith("  FAILED b: ") and "config.yaml" in line for line in said), said
        assert not (tmp_path / "b").exists()


def test_a_shared_part_with_a_cut_short_state_names_the_file(tmp_path):
    part = SweepRun("shared/sample-x_seed-0", {"seed": 0}, until="sample")
    run = SweepRun("b", {"seed": 0, "label.p_know": 1}, start_from=part.name)
    folder = _stopped_after_sample(tmp_path / "shared" / "sample-x_seed-0", _config())
    (folder / "state.json").write_text('{"done": {"sft": ')
    with pytest.raises(ValueError, match=re.escape(str(folder / "state.json")) + ": not valid JSON"):
        run_runs("t", {}, [part, run], tmp_path, source="test", echo=lambda _: None)
    assert not (tmp_path / "b").exists()

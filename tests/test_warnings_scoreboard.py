"""The early-warning scoreboard: scoring a warning against the gold peak, calibrating on other seeds, and the
command end to end on micro runs (`--quick`)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rlhf_lab import early_warning
from rlhf_lab.warnings_scoreboard import RunResult, base_config, calibrate, markdown, read_run, score, scoreboard

POINTS = (0, 1, 2, 4, 8, 16)


def make_run(gold_means: dict[int, float], *, seed: int = 0, kl=lambda u: float(u), n: int = 40) -> RunResult:
    """A run whose KL is kl(u) at every update and whose per-prompt gold at each point is its mean plus a fixed
    small spread (the same prompts at every point)."""
    spread = np.linspace(-0.05, 0.05, n)
    updates = range(1, max(gold_means) + 1)
    history = [{"step": u, "phase": "policy", "objective/kl": kl(u)} for u in updates]
    return RunResult(name=f"seed-{seed}", setting="default", seed=seed, history=history,
                     gold={u: g + spread for u, g in gold_means.items()},
                     kl={0: 0.0, **{u: kl(u) for u in updates}})


RISE_FALL = dict(zip(POINTS, [0.0, 0.1, 0.2, 0.3, 0.4, -0.5], strict=True))  # peak at 8, falls by 16
RISE = dict(zip(POINTS, [0.0, 0.1, 0.2, 0.3, 0.4, 0.45], strict=True))  # never falls


def test_a_warning_before_the_peak_is_on_time_with_its_lead_and_the_gold_stop_would_keep():
    run = make_run(RISE_FALL)
    assert run.peak == 8 and run.falls
    row = score(run, 5)
    assert row["on_time"] and row["by_next_point"] and not row["false_alarm"]
    assert row["lead_updates"] == 3 and row["lead_nats"] == pytest.approx(8 - 5)
    assert row["saved"] == 4 and row["gold_stop"] == pytest.approx(0.3) and row["gold_end"] == pytest.approx(-0.5)
    late = score(run, 12)  # after the peak, before the next point: not on time, but by the next point
    assert not late["on_time"] and late["by_next_point"] and late["lead_updates"] == -4 and late["saved"] == 8
    never = score(run, None)
    assert not never["on_time"] and never["saved"] == 16 and never["gold_stop"] == never["gold_end"]


def test_false_alarms_a_run_whose_gold_never_falls_and_a_warning_far_too_early():
    rising = make_run(RISE)
    assert not rising.falls
    assert score(rising, 10)["false_alarm"] and not score(rising, 10)["on_time"]
    # √KL at update 1 is 1, under half the peak's √8 ≈ 2.83: more than the margin early
    assert score(make_run(RISE_FALL), 1)["false_alarm"]
    assert not score(make_run(RISE_FALL), 3)["false_alarm"]  # √3 ≈ 1.73 > 1.41


def test_a_wobble_within_noise_is_not_a_fall():
    wobble = dict(zip(POINTS, [0.0, 0.1, 0.2, 0.3, 0.4, 0.39], strict=True))
    spread_run = make_run(wobble)
    spread_run.gold = {u: g + np.random.default_rng(u).normal(0, 0.5, 40) for u, g in wobble.items()}
    assert not spread_run.falls


def test_a_flat_noisy_gold_curve_does_not_fall():
    """Gold that never moves over 11 evaluation points: tested at its own argmax (the best of 11 noisy means) the
    end looked like a fall in 25 of 200 runs, which counted warnings there as on time, not as false alarms."""
    points = range(11)
    flat = [make_run(dict.fromkeys(points, 0.0), seed=s) for s in range(200)]
    for r in flat:
        r.gold = {u: np.random.default_rng([r.seed, u]).normal(0, 1.0, 256) for u in points}
    assert sum(r.falls for r in flat) <= 16  # measured 13 (one-sided 2.5 % would be 5)
    falling = make_run(RISE_FALL)
    falling.gold = {u: g + np.random.default_rng(u).normal(0, 1.0, 256) for u, g in RISE_FALL.items()}
    assert falling.falls


def test_a_repeated_setting_is_one_error_and_writes_nothing(tmp_path):
    from rlhf_lab import load_config
    from rlhf_lab.warnings_scoreboard import run_scoreboard

    base = base_config(load_config(), quick=True)
    with pytest.raises(ValueError, match=r"run name\(s\) default_seed-0, default_seed-1 repeat"):
        run_scoreboard(base, out=tmp_path / "out", seeds="0", calibration_seeds="1", settings=["default", "default"])
    assert not (tmp_path / "out").exists()


def test_an_algorithm_without_the_online_loop_is_refused():
    from rlhf_lab import load_config
    from rlhf_lab.config import ConfigError

    for algorithm in ("dpo", "best_of_n"):  # no warnings, no KL per update: a scoreboard of nothing
        with pytest.raises(ConfigError, match=f"policy.algorithm={algorithm}: the scoreboard scores"):
            base_config(load_config(overrides=[f"policy.algorithm={algorithm}"]), quick=True)
    grpo = base_config(load_config(overrides=["policy.algorithm=grpo"]), quick=True)
    assert grpo["policy"]["early_warning"] == "warn"


def test_calibration_picks_the_threshold_that_warns_in_time_without_false_alarms():
    # falling runs: gold peaks at update 8 (KL 8); a run that never falls reaches KL 6 at its end (update 16)
    falling = [make_run(RISE_FALL, seed=s) for s in (100, 101)]
    steady = make_run(RISE, seed=102, kl=lambda u: 6.0 * u / 16)
    cal = calibrate([*falling, steady], "kl_budget")
    by_t = {g["threshold"]: g for g in cal["grid"]}
    # below KL 6 the steady run fires too (a false alarm); 6 fires at update 7 in the falling runs, before the peak
    assert by_t[4]["false_alarms"] > 0 and by_t[6]["false_alarms"] == 0 and by_t[6]["on_time"] == 1.0
    assert by_t[12]["on_time"] == 0.0  # fires at 13, after the peak
    assert cal["threshold"] == 6


def test_scoreboard_needs_disjoint_seeds_and_scores_with_the_calibrated_threshold():
    cal_runs = [make_run(RISE_FALL, seed=100), make_run(RISE, seed=101, kl=lambda u: 6.0 * u / 16)]
    with pytest.raises(ValueError, match="overlap"):
        scoreboard(cal_runs, [make_run(RISE_FALL, seed=100)])
    board = scoreboard(cal_runs, [make_run(RISE_FALL, seed=0), make_run(RISE_FALL, seed=1)])
    kl = board["kl_budget"]
    assert kl["calibration"]["threshold"] == 6
    assert [r["fired"] for r in kl["runs"]] == [7, 7]
    s = kl["summary"]
    assert s["on_time"]["value"] == 1.0 and s["false_alarms"] == 0 and s["stop_better"] == 2
    assert s["stop_minus_end"]["value"] == pytest.approx(0.3 - (-0.5))  # stop keeps update 4's gold
    assert board["repetition"]["summary"]["warned"] == 0  # nothing logged for it: never fires
    assert s["meets_bar"] and not board["repetition"]["summary"]["meets_bar"]
    md = markdown(board, {"settings": {"default": {}}, "calibration_seeds": [100, 101], "scoring_seeds": [0, 1],
                          "early_margin": 0.5})
    assert "false alarms in ≤ 20 % of the runs: kl_budget." in md


def test_the_scoreboards_runs_never_stop_early():
    """A stopped run hides where its gold would have gone: the scoreboard's runs warn, whatever the config says."""
    from rlhf_lab.config import load_config

    base = base_config(load_config(overrides=["policy.early_warning=stop"]), quick=True)
    assert base["policy"]["early_warning"] == "warn" and base["policy"]["updates"] == 6


def test_quick_scoreboard_end_to_end(tmp_path):
    out = tmp_path / "board"
    cmd = [sys.executable, "-m", "rlhf_lab.cli", "warnings-scoreboard", "--quick", "--seeds", "0",
           "--calibration-seeds", "100", "--settings", "default", "--jobs", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout + done.stderr
    board = json.loads((out / "scoreboard.json").read_text())
    assert board["scoring_seeds"] == [0] and board["calibration_seeds"] == [100]
    assert set(board["detectors"]) == set(early_warning.DETECTORS)
    md = (out / "scoreboard.md").read_text()
    assert all(f"| {name} |" in md for name in early_warning.DETECTORS)
    # the scoreboard's warning in the scored run is what the detector says of that run's logged history
    run = read_run(out / "runs" / "default_seed-0", setting="default", seed=0)
    assert run.points[0] == 0 and len(run.points) >= 3  # update 0 and the log schedule's points
    for name, b in board["detectors"].items():
        (row,) = b["runs"]
        assert row["fired"] == early_warning.DETECTORS[name].fire(run.history, b["calibration"]["threshold"])
        assert row["gold_end"] == pytest.approx(float(run.gold[run.points[-1]].mean()))
    # the evaluation points logged the text signals the detectors read
    assert early_warning.series(run.history, "eval/distinct_2")[0][0] == 0
    # rerun: every run is finished already, nothing is trained again
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "2 finished already" in again.stdout


def test_bad_settings_and_overlapping_seeds_are_one_line_errors_and_write_nothing(tmp_path):
    base = [sys.executable, "-m", "rlhf_lab.cli", "warnings-scoreboard", "--quick", "--out", str(tmp_path / "b")]
    bad = subprocess.run([*base, "--settings", "default,nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "nope" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    overlap = subprocess.run([*base, "--seeds", "0-2", "--calibration-seeds", "2"], capture_output=True, text=True)
    assert overlap.returncode != 0 and "overlap" in overlap.stderr
    assert not (tmp_path / "b").exists()

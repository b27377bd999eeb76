"""The early-warning detectors on hand-made histories: each fires where its signal crosses, not before, and
not at all without its signal; none reads gold."""

import math

import pytest

from rlhf_lab import early_warning as ew
from rlhf_lab.text_metrics import distinct_ngrams


def per_update(key: str, values, start: int = 1) -> list[dict]:
    return [{"step": start + i, "phase": "policy", key: v} for i, v in enumerate(values)]


def at_points(key: str, points: dict[int, float]) -> list[dict]:
    return [{"step": u, "phase": "policy", key: v} for u, v in points.items()]


def test_kl_budget_fires_at_the_first_update_past_the_budget():
    h = per_update("objective/kl", [0.5, 1.0, 2.5, 4.1, 3.9, 6.0])
    assert ew.kl_budget(h, 4.0) == 4
    assert ew.kl_budget(h, 6.0) is None  # strictly above
    assert ew.kl_budget([], 1.0) is None


def test_kl_acceleration_fires_when_the_slope_rises_not_while_it_falls():
    decelerating = [2 * math.sqrt(u) for u in range(1, 41)]  # what annealing gives: slope ever smaller
    assert ew.kl_acceleration(per_update("objective/kl", decelerating), 1.5) is None
    # steady 0.1 nats/update for 20 updates, then 0.5 nats/update
    kl = [0.1 * u for u in range(1, 21)] + [2.0 + 0.5 * u for u in range(1, 21)]
    fired = ew.kl_acceleration(per_update("objective/kl", kl), 1.5)
    assert fired is not None and 21 <= fired <= 21 + 2 * ew.SMOOTH
    # a tiny rise in a flat KL is below MIN_SLOPE: noise, not an acceleration
    flat = [1.0 + 0.001 * u * u for u in range(1, 41)]
    assert ew.kl_acceleration(per_update("objective/kl", flat), 1.5) is None
    assert ew.kl_acceleration(per_update("objective/kl", kl[:5]), 1.5) is None  # too short to say


def test_proxy_gap_is_measured_against_the_first_gap():
    train = per_update("objective/scores", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4])
    held = at_points("eval/proxy_reward", {0: 0.0, 2: 0.1, 4: 0.4, 8: 0.5})
    # gaps: at 2: mean(0, .2) − .1 = 0; at 4: mean(.4, .6) − .4 = .1; at 8: mean(.8 … 1.4) − .5 = .6
    assert ew.proxy_gap(train + held, 0.3) == 8
    assert ew.proxy_gap(train + held, 0.05) == 4
    assert ew.proxy_gap(train + held, 0.7) is None
    assert ew.proxy_gap(train + at_points("eval/proxy_reward", {0: 0.0, 2: 0.1}), 0.0) is None  # one gap only


@pytest.mark.parametrize(("fn", "key", "start", "path", "threshold", "expect"), [
    (ew.length_drift, "eval/length", 10.0, [11.0, 12.5, 14.0], 0.3, 4),  # +40 % at 4
    (ew.length_drift, "eval/length", 10.0, [9.0, 6.5], 0.3, 2),  # shorter counts too: −35 % at 2
    (ew.repetition, "eval/repeated_ngram_share", 0.05, [0.08, 0.2], 0.1, 2),
    (ew.distinct_n, "eval/distinct_2", 0.6, [0.55, 0.45], 0.1, 2),
    (ew.opener_share, "eval/same_opener", 0.1, [0.15, 0.3], 0.1, 2),
    (ew.stop_rate, "eval/stop_rate", 0.99, [0.97, 0.9], 0.05, 2),
    (ew.reward_disagreement, "eval/reward_disagreement", 0.2, [0.25, 0.35], 1.5, 2),
])
def test_eval_point_detectors_fire_against_the_sft_policy(fn, key, start, path, threshold, expect):
    points = {0: start, **{2 ** i: v for i, v in enumerate(path)}}  # updates 1, 2, 4
    h = at_points(key, points)
    assert fn(h, threshold) == expect
    # never on the start itself, never without a start (update 0), never at a threshold nothing crosses
    assert fn(at_points(key, {0: start}), threshold) is None
    assert fn(at_points(key, {u: v for u, v in points.items() if u > 0}), threshold) is None
    assert fn(h, 1e6) is None


def test_entropy_collapse_reads_per_token_entropy():
    length = [10.0] * 12 + [20.0] * 12  # longer answers, same per-token entropy: no collapse
    ent = [10.0] * 12 + [20.0] * 12
    h = per_update("objective/length", length) + per_update("objective/entropy", ent)
    assert ew.entropy_collapse(h, 0.7) is None
    falling = [10.0] * 8 + [3.0] * 16  # per token 1.0 → 0.3
    h = per_update("objective/length", [10.0] * 24) + per_update("objective/entropy", falling)
    fired = ew.entropy_collapse(h, 0.7)
    # moving average over 4: (1 + 1 + .3 + .3)/4 = .65 < .7 first at update 10
    assert fired == 10


def test_series_keeps_finite_numbers_and_the_last_record_of_an_update():
    h = [{"step": 1, "k": 1.0}, {"step": 2, "k": float("nan")}, {"step": 3, "k": True}, {"step": 1, "k": 2.0},
         {"k": 5.0}, {"step": 4, "k": "x"}]
    assert ew.series(h, "k") == [(1, 2.0)]


def test_no_detector_reads_gold():
    """Every detector gives the same answer whatever the gold utility is: it is never read."""
    assert not any("gold" in k for d in ew.DETECTORS.values() for k in d.reads)
    base = (per_update("objective/kl", [0.3 * u for u in range(1, 30)])
            + per_update("objective/scores", [0.05 * u for u in range(1, 30)])
            + per_update("objective/entropy", [10.0 - 0.2 * u for u in range(1, 30)])
            + per_update("objective/length", [10.0] * 29))
    evals = {u: {"eval/proxy_reward": 0.02 * u, "eval/length": 10 + u, "eval/stop_rate": 1 - 0.01 * u,
                 "eval/repeated_ngram_share": 0.01 * u, "eval/distinct_2": 0.6 - 0.01 * u,
                 "eval/same_opener": 0.01 * u, "eval/reward_disagreement": 0.1 + 0.01 * u} for u in (0, 1, 2, 4, 8, 16)}
    with_gold = [{"step": u, **m, "eval/gold_utility": g} for (u, m), g in zip(evals.items(), [0, 1, 2, 1, -1, -3],
                                                                               strict=True)]
    other_gold = [{**r, "eval/gold_utility": -r["eval/gold_utility"]} for r in with_gold]
    no_gold = [{k: v for k, v in r.items() if k != "eval/gold_utility"} for r in with_gold]
    fired = ew.check(base + with_gold)
    assert fired  # something to compare
    assert ew.check(base + other_gold) == fired == ew.check(base + no_gold)


def test_check_takes_thresholds_and_names_and_warnings_logged_reads_them_back():
    h = per_update("objective/kl", [1.0, 2.0, 3.0, 9.0])
    assert ew.check(h, names=["kl_budget"]) == {"kl_budget": 4}  # default 4 nats: 9 > 4 at update 4
    assert ew.check(h, thresholds={"kl_budget": 1.5}, names=["kl_budget"]) == {"kl_budget": 2}
    assert ew.check(h, names=["repetition"]) == {}
    logged = [*h, {"step": 4, "phase": "policy", "warning/kl_budget": 4}, {"step": 6, "warning/kl_budget": 6}]
    assert ew.warnings_logged(logged) == {"kl_budget": 4}


def test_every_default_threshold_is_on_its_calibration_grid():
    for d in ew.DETECTORS.values():
        assert d.threshold in d.grid, d.name
        assert d.what and d.unit


def test_distinct_ngrams():
    assert distinct_ngrams(["a b c", "d e f"], 2) == 1.0
    assert distinct_ngrams(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_ngrams(["a b", "a b", "a b", "a b"], 2) == 0.25
    assert distinct_ngrams(["a", ""], 2) == 0.0


def test_config_reads_a_bare_off_and_names_an_unknown_detector():
    from rlhf_lab.config import ConfigError, build_config

    assert build_config({"policy": {"early_warning": False}}).policy.early_warning == "off"  # YAML's `off`
    assert build_config({}, ["policy.early_warning=off"]).policy.early_warning == "off"
    with pytest.raises(ConfigError, match="unknown detector 'kl'"):
        build_config({}, ["policy.early_warning_thresholds={kl: 2}"])
    with pytest.raises(ConfigError, match="unknown detector 'nope'"):
        build_config({}, ["policy.early_warning_detectors=[nope]"])
    for bad in (".nan", ".inf"):  # never crossed (NaN) or never reached: a detector silently off
        with pytest.raises(ConfigError, match=r"early_warning_thresholds\.kl_budget: \S+ is not a finite number"):
            build_config({}, [f"policy.early_warning_thresholds={{kl_budget: {bad}}}"])

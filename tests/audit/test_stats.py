"""The audit's statistics: known values, coverage in simulation, and defined answers on degenerate input."""

import math
import random

import numpy as np
import pytest

from rlhf_lab.audit import stats


def test_wilson_known_values():
    # Hand-computed: k = 0, n = 10 → upper z²/(n + z²) = 3.8415 / 13.8415 = 0.2775
    lo, hi = stats.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = stats.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert stats.wilson(10, 10)[1] == 1.0
    assert stats.wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("p,n", [(0.3, 50), (0.05, 80), (0.9, 20)])
def test_wilson_covers_the_true_rate(p, n):
    rng = np.random.default_rng(0)
    ks = rng.binomial(n, p, size=1000)
    covered = np.mean([lo <= p <= hi for lo, hi in (stats.wilson(int(k), n) for k in ks)])
    assert 0.92 <= covered <= 0.985, covered


def test_bootstrap_interval_covers_the_true_mean():
    rng = np.random.default_rng(1)
    covered = 0
    for i in range(300):
        x = rng.exponential(1.0, size=60)  # skewed: the percentile bootstrap still has to cover
        lo, hi = stats.bootstrap_ci(x, seed=i, n_boot=500)
        covered += lo <= 1.0 <= hi
    assert 0.88 <= covered / 300 <= 0.98, covered / 300


def test_paired_difference_is_tighter_than_unpaired():
    rng = np.random.default_rng(2)
    base = rng.normal(size=200)
    after = base + 0.1 + rng.normal(scale=0.1, size=200)
    paired = stats.difference(base, after, paired=True)
    unpaired = stats.difference(base, after, paired=False)
    assert paired["value"] == pytest.approx(unpaired["value"])
    assert paired["hi"] - paired["lo"] < (unpaired["hi"] - unpaired["lo"]) / 3
    assert paired["lo"] > 0  # the shift is detected


@pytest.mark.parametrize("values", [[], [1.0], [0.0] * 5, [1.0] * 5])
def test_degenerate_inputs_give_defined_values(values):
    for est in (stats.rate(values), stats.mean(values), stats.difference(values, values, paired=True)):
        assert set(est) == {"value", "lo", "hi", "n"}
        for k in ("value", "lo", "hi"):
            assert est[k] is None or math.isfinite(est[k])
    m = stats.compare(values, values, kind="rate", label="x", better="lower")
    assert stats.within_noise(m["change"])
    g = stats.gap_compare(values, values, values, values, label="gap", better=None)
    assert g["change"]["value"] in (None, 0.0)
    assert stats.krippendorff_alpha(np.zeros((0, 3)))["value"] is None


def test_all_identical_rates_have_a_one_sided_interval():
    est = stats.rate([1.0] * 40)
    assert est["value"] == 1.0 and est["hi"] == 1.0 and est["lo"] < 1.0


def test_krippendorff_alpha_matches_the_reference_package():
    from rlhf_lab.annotate.agreement import krippendorff_alpha

    rng = random.Random(0)
    triples, counts = [], []
    for item in range(80):
        truth = rng.choice("ab")
        row = [0, 0, 0]
        for ann in rng.sample(range(10), rng.choice([1, 2, 3, 4])):
            c = truth if rng.random() < 0.7 else rng.choice(["a", "b", "tie"])
            triples.append((item, ann, c))
            row["abt".index(c[0])] += 1
        counts.append(row)
    ours = stats.krippendorff_alpha(np.array(counts))
    assert ours["value"] == pytest.approx(krippendorff_alpha(triples), abs=1e-9)
    assert ours["lo"] <= ours["value"] <= ours["hi"]


def test_perfect_agreement_gives_alpha_one():
    counts = np.array([[3, 0, 0], [0, 3, 0], [3, 0, 0], [0, 2, 0]])
    assert stats.krippendorff_alpha(counts)["value"] == pytest.approx(1.0)


def test_cross_fit_argmax_chooses_each_row_on_the_other_half():
    values = np.random.default_rng(3).normal(size=(9, 5))  # (P, J), odd P: halves of 5 and 4 rows
    best = stats.cross_fit_argmax(values)
    for i in range(9):  # naive: the column of highest mean over the rows of the other parity
        other = [r for r in range(9) if r % 2 != i % 2]
        assert best[i] == int(np.argmax(values[other].mean(0)))
    # a row's own value never chooses its column: raising it leaves the choice for its half as it was
    bumped = values.copy()
    bumped[0, (best[0] + 1) % 5] += 100.0
    assert stats.cross_fit_argmax(bumped)[0] == best[0]


def test_a_rates_interval_is_shown_within_0_and_100_percent():
    from rlhf_lab.audit import prose

    # a Student-t interval over three seeds of 99 %, 99 % and 92 % runs past 100 %
    assert prose.short({"value": 0.97, "lo": 0.86, "hi": 1.08}, "rate") == "97 % [86, 100]"
    assert prose.short({"value": 0.13, "lo": -0.12, "hi": 0.37}, "rate") == "13 % [0, 37]"
    assert prose.short({"value": 0.5, "lo": 0.4, "hi": 0.6}, "mean") == "0.50 [0.40, 0.60]"
    # and a difference of two rates within ±100 points (p_know 0.2 − p_know 1 over three seeds)
    assert prose.change_interval({"value": 0.84, "lo": 0.49, "hi": 1.19}, "rate") == "+84 points [+49, +100]"


def test_the_sycophancy_split_puts_every_sum_with_arithmetic_and_every_place_fact_with_places():
    """A product over 20 is as hard to check as a well-known place (0.55 ≥ 0.5): a difficulty threshold counted
    it among the places, while the audit, the reproduction and the docs call the split arithmetic vs places."""
    from rlhf_lab.audit.sycophancy import PAIR_FAMILIES, hard_to_check
    from rlhf_lab.config import WorldConfig
    from rlhf_lab.world import World

    world = World(WorldConfig(operations=["plus", "times"], max_operand=6))
    probes = world.prompts("audit", 400, seed=0, families=PAIR_FAMILIES)
    sums = [p for p in probes if p.fact.kind == "arith"]
    assert any(p.difficulty >= 0.5 for p in sums)  # the case a difficulty threshold got wrong is drawn
    assert len(sums) < len(probes)
    assert [hard_to_check(p) for p in probes] == [p.fact.kind != "arith" for p in probes]

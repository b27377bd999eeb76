"""Best-of-n and the Gao et al. fits, against brute force and synthetic curves with known coefficients."""

import itertools
import math

import numpy as np
import pytest

from rlhf_lab.audit.overoptimisation import (
    best_of_n,
    bon_weights,
    fit_bon,
    fit_rl,
    fitted_peak,
    kl_bon,
    training_curve,
)


def test_kl_bon():
    assert kl_bon(1) == pytest.approx(0.0)
    assert kl_bon(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_bon(64) == pytest.approx(math.log(64) - 63 / 64)


def test_bon_weights_match_enumerating_subsets():
    N = 6
    for n in range(1, N + 1):
        w = bon_weights(N, [n])[0]
        assert w.sum() == pytest.approx(1.0)
        counts = np.zeros(N)
        for subset in itertools.combinations(range(N), n):
            counts[max(subset)] += 1  # the index of the highest-ranked member of the subset
        assert np.allclose(w, counts / counts.sum())


def test_best_of_n_equals_brute_force():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    ns = [1, 2, 3, 7]
    bp, bg = best_of_n(proxy, gold, ns)
    for p in range(3):
        for j, n in enumerate(ns):
            subsets = list(itertools.combinations(range(7), n))
            best = [max(s, key=lambda i: proxy[p, i]) for s in subsets]
            assert bp[p, j] == pytest.approx(np.mean([proxy[p, i] for i in best]))
            assert bg[p, j] == pytest.approx(np.mean([gold[p, i] for i in best]))
    assert bp[:, 0] == pytest.approx(proxy.mean(1))  # n = 1 is the plain sample mean
    assert np.all(np.diff(bp, axis=1) >= -1e-12)  # best-of-n proxy never falls with n


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.25), (0.6, 0.4), (2.0, 0.1)])
def test_fit_bon_recovers_coefficients(alpha, beta):
    rng = np.random.default_rng(1)
    d = np.sqrt(kl_bon(np.arange(1, 200)))
    r = d * (alpha - beta * d) + rng.normal(scale=0.005, size=d.shape)
    fit = fit_bon(d, r)
    assert fit["alpha"] == pytest.approx(alpha, rel=0.05)
    assert fit["beta"] == pytest.approx(beta, rel=0.05)
    assert fit["r2"] > 0.99
    assert fitted_peak("bon", fit) == pytest.approx(alpha / (2 * beta), rel=0.1)


@pytest.mark.parametrize("alpha,beta", [(0.8, 0.5), (1.5, 0.3), (0.3, 0.6)])
def test_fit_rl_recovers_coefficients(alpha, beta):
    rng = np.random.default_rng(2)
    d = np.linspace(0.0, 4.0, 25)
    r = d * (alpha - beta * np.log(np.where(d > 0, d, 1))) + rng.normal(scale=0.005, size=d.shape)
    fit = fit_rl(d, r)
    assert fit["alpha"] == pytest.approx(alpha, rel=0.05)
    assert fit["beta"] == pytest.approx(beta, rel=0.05)
    assert fitted_peak("rl", fit) == pytest.approx(math.exp(alpha / beta - 1), rel=0.15)


@pytest.mark.parametrize("d,r", [([], []), ([0.0], [0.0]), ([0.0, 0.0], [0.1, 0.2]), ([1.0, 1.0], [1.0, 1.0])])
def test_fits_on_degenerate_input(d, r):
    for fit in (fit_bon(d, r), fit_rl(d, r)):
        assert set(fit) == {"alpha", "beta", "r2", "n"}
        for k in ("alpha", "beta", "r2"):
            assert fit[k] is None or math.isfinite(fit[k])
        fitted_peak("bon", fit), fitted_peak("rl", fit)


def test_best_of_n_on_empty_input():
    bp, bg = best_of_n(np.zeros((0, 0)), None, [1])
    assert bp.shape == (0, 1) and bg is None


def test_training_curve_reads_evaluation_points():
    metrics = [{"phase": "sft", "sft/loss": 1.0},
               {"phase": "policy", "step": 0, "eval/proxy_reward": 0.0, "eval/gold_utility": 0.1, "eval/kl": 0.0},
               {"phase": "policy", "step": 1, "objective/kl": 3.0},
               {"phase": "policy", "step": 10, "eval/proxy_reward": 0.5, "eval/gold_utility": -0.2, "eval/kl": 4.0}]
    curve = training_curve(metrics)
    assert [c["step"] for c in curve] == [0, 10]
    assert curve[1]["d"] == pytest.approx(2.0)


def test_training_curve_keeps_reward_model_disagreement_and_plots_it():
    """With a set of reward models the evaluation points carry their disagreement and each member's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlhf_lab.audit.overoptimisation import training_plot

    metrics = [{"phase": "policy", "step": s, "eval/proxy_reward": p, "eval/gold_utility": 0.0, "eval/kl": s / 10,
                "eval/reward_disagreement": dis, "eval/proxy_reward/member/0": p - dis,
                "eval/proxy_reward/member/1": p + dis} for s, p, dis in ((0, 0.0, 0.1), (10, 0.8, 0.4))]
    curve = training_curve(metrics)
    assert [c["disagreement"] for c in curve] == [0.1, 0.4]
    assert curve[1]["members"] == {"0": pytest.approx(0.4), "1": pytest.approx(1.2)}
    fig = training_plot({"rl": {"curve": curve}}, plt)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("disagreement" in lab for lab in labels) and "member 1" in labels


def test_a_fitted_peak_far_past_the_data_is_not_stated_as_a_number():
    """A nearly straight RL curve fits d(α − β ln d) with a tiny β, whose peak exp(α/β − 1) is astronomically far
    (a gold-optimised run gave d* ≈ 7·10⁵ on data up to d = 1.2): the report says it lies beyond the data."""
    from rlhf_lab.audit.overoptimisation import peak_text

    curve = [{"d": d} for d in (0.0, 0.4, 0.8, 1.18)]
    far = {"alpha": 0.283, "beta": 0.020}
    assert fitted_peak("rl", far) > 1e5
    assert peak_text("rl", far, curve) == "beyond the data (no turn within 2 × the largest d, 1.18)"
    near = {"alpha": 0.5, "beta": 0.5}  # exp(0) = 1: inside the data
    assert peak_text("rl", near, curve) == "d = 1.00 (KL 1.0)"
    assert peak_text("rl", {"alpha": 0.5, "beta": -0.1}, curve) is None  # never turns down

"""The report reads correctly (issue 12, item 5), checked on the drawn figures: every panel has a y-axis label,
proxy and gold are on separate axes, fits stay over their data, legends sit off the bars, the comparison has
one small plot per metric and its curves run in order of √KL; and the prose's interval signs agree with its
sentence."""

import numpy as np
import pytest

from rlhf_lab.audit import compare, deception, degeneration, overoptimisation, prose, stats, sycophancy
from rlhf_lab.audit.plots import pyplot
from tests.audit.test_report_flags import collapsed_audit, rate


@pytest.fixture(scope="module")
def plt():
    return pyplot()


def _audit_with_bon() -> dict:
    audit = collapsed_audit()
    over = audit["tensions"]["overoptimisation"]
    ns = [1, 2, 4, 8]
    d = np.sqrt(overoptimisation.kl_bon(np.array(ns)))
    over["bon"] = {"n_prompts": 32, "curve": [
        {"n": n, "d": float(x), "kl": float(x * x), "proxy": stats.mean([0.2 * n, 0.2 * n + 0.1]),
         "gold": stats.mean([0.1 - 0.01 * n, 0.12 - 0.01 * n])} for n, x in zip(ns, d, strict=True)]}
    curve = over["rl"]["curve"]
    dd = np.array([c["d"] for c in curve])
    over["rl"]["fit"] = {k: overoptimisation.fit_rl(dd, np.array([c[k] - curve[0][k] for c in curve]))
                         for k in ("proxy", "gold")}
    bd = np.array([c["d"] for c in over["bon"]["curve"]])
    over["bon"]["fit"] = {k: overoptimisation.fit_bon(bd, np.array([c[k]["value"] - over["bon"]["curve"][0][k]["value"]
                                                                    for c in over["bon"]["curve"]]))
                          for k in ("proxy", "gold")}
    return audit


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


@pytest.mark.parametrize("module", [overoptimisation, degeneration, sycophancy, deception])
def test_every_panel_has_a_y_label(module, plt):
    fig = module.plot(_audit_with_bon()["tensions"][module.NAME], plt)
    for ax in fig.axes:
        if ax.get_visible():
            assert ax.get_ylabel().strip(), (module.NAME, ax.get_title())
    plt.close(fig)


def test_proxy_and_gold_are_on_separate_axes_and_fits_stay_over_their_data(plt):
    section = _audit_with_bon()["tensions"]["overoptimisation"]
    fig = overoptimisation.plot(section, plt)
    proxy_ax, gold_ax = fig.axes
    assert "reward-model units" in proxy_ax.get_ylabel() and "gold utility" in gold_ax.get_ylabel()
    rl_d = [c["d"] for c in section["rl"]["curve"]]
    bon_d = [c["d"] for c in section["bon"]["curve"]]
    fits = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label().startswith("fit")]
    assert len(fits) == 4
    for ln in fits:
        x = ln.get_xdata()
        d = rl_d if "ln d" in ln.get_label() else bon_d
        assert x.min() >= min(d) - 1e-9 and x.max() <= max(d) + 1e-9, ln.get_label()
    plt.close(fig)
    tp = overoptimisation.training_plot(section, plt)
    assert [a.get_ylabel() for a in tp.axes] == ["reward-model units", "utility", "nats per answer"]
    plt.close(tp)


def test_legends_sit_off_the_bars(plt):
    section = collapsed_audit()["tensions"]["degeneration"]
    section["metrics"]["well_formed"] = rate(250, 248, label="w", better="higher")  # bars up to the top
    for module, sec in ((degeneration, section), (sycophancy, collapsed_audit()["tensions"]["sycophancy"])):
        fig = module.plot(sec, plt)
        renderer = _drawn(fig)
        for ax in fig.axes:
            legend = ax.get_legend()
            if not ax.get_visible() or legend is None:
                continue
            box = legend.get_window_extent(renderer)
            for bar in ax.patches:
                assert not box.overlaps(bar.get_window_extent(renderer)), (module.NAME, ax.get_title())
            for coll in ax.collections:  # the error bars' whiskers, end points in display coordinates
                for seg in coll.get_segments():
                    for x, y in ax.transData.transform(seg):
                        assert not box.contains(x, y), (module.NAME, ax.get_title())
        plt.close(fig)


def test_the_comparison_has_one_small_plot_per_metric(plt):
    a, b = _audit_with_bon(), _audit_with_bon()
    b["tensions"]["overoptimisation"]["metrics"]["kl"] = stats.compare([0.0] * 10, [300.0] * 10, kind="mean",
                                                                      label="KL", better=None)
    fig = compare.compare_plot("overoptimisation", [a, b], ["a", "b"], plt)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4  # proxy, gold, kl, length
    kl_ax, proxy_ax = visible[2], visible[0]
    assert kl_ax.get_ylim()[1] > 250 and proxy_ax.get_ylim()[1] < 10  # KL's scale is its own
    assert all(ax.get_ylabel() for ax in visible)
    plt.close(fig)
    deg = compare.compare_plot("degeneration", [a, b], ["a", "b"], plt)
    assert sum(ax.get_visible() for ax in deg.axes) == len(compare.COMPARE["degeneration"])
    plt.close(deg)


def test_comparison_curves_run_in_order_of_sqrt_kl(plt):
    a = _audit_with_bon()
    curve = a["tensions"]["overoptimisation"]["rl"]["curve"]
    curve[2]["kl"], curve[2]["d"] = 2.0, 2.0 ** 0.5  # KL fell back between two evaluation points
    fig = compare.curves_plot([a], ["a"], plt)
    proxy_ax, gold_ax = fig.axes
    assert "reward-model units" in proxy_ax.get_ylabel() and "utility" in gold_ax.get_ylabel()
    for ax in fig.axes:
        for ln in ax.get_lines():
            x = np.asarray(ln.get_xdata(), dtype=float)
            assert np.all(np.diff(x) >= 0), ln.get_label()
    plt.close(fig)


def test_prose_interval_signs_agree_with_the_sentence():
    # the policy is 20 points more accurate with a wrong belief stated: the gain's interval is positive
    more = stats.gap_compare([1.0] * 30 + [0.0] * 70, [1.0] * 30 + [0.0] * 70, [1.0] * 30 + [0.0] * 70,
                             [1.0] * 50 + [0.0] * 50, label="drop", better="lower")
    section = collapsed_audit()["tensions"]["sycophancy"]
    section["metrics"]["accuracy_plain"] = rate(30, 30, label="a", better="higher", n=100)
    section["metrics"]["accuracy_drop"] = more
    text = sycophancy.reading(section)
    sentence = text.split("points more accurate (", 1)[1].split(")", 1)[0]
    lo, hi = (float(x) for x in sentence.removeprefix("95 % CI ").removesuffix(" points").split(" to "))
    assert 0 < lo <= 20 <= hi, sentence
    # best-of-n: "a drop of X (95 % CI lo to hi)" names a positive drop
    drop = {"value": -0.3, "lo": -0.5, "hi": -0.1, "n": 32}
    said = prose.interval(prose.negated(drop))
    assert said.startswith("0.30 (95 % CI 0.10 to 0.50"), said

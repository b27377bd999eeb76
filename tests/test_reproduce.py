"""`rlhf-lab reproduce` (issue 13): the verdict logic on hand-made numbers, the measures on hand-made audits,
the registry against its sweep files, and a micro end-to-end run of the command."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf_lab.audit import stats
from rlhf_lab.config import ConfigError
from rlhf_lab.reproduce import FINDINGS, measures, runner, verdict
from tests.conftest import MICRO

# --- verdicts over seeds ---------------------------------------------------------------------------------


def test_verdict_reproduced_not_reproduced_opposite():
    up = [0.30, 0.25, 0.35]  # mean 0.30, t interval [0.18, 0.42]
    assert verdict.verdict(up, +1) == "reproduced"
    assert verdict.verdict(up, -1) == "opposite"
    assert verdict.verdict([-v for v in up], -1) == "reproduced"
    mixed = [0.30, -0.20, 0.10]  # mean 0.07, the interval contains 0
    assert verdict.verdict(mixed, +1) == "not reproduced"
    assert verdict.verdict(mixed, -1) == "not reproduced"
    # all three seeds moved the predicted way, but too little for the interval to exclude 0
    assert verdict.verdict([0.01, 0.40, 0.02], +1) == "not reproduced"


def test_verdict_without_an_interval_is_never_reproduced():
    assert verdict.verdict([0.5], +1) == "one seed"
    assert verdict.one_seed_direction([0.5], +1) == "in the predicted direction"
    assert verdict.one_seed_direction([0.5], -1) == "against it"
    assert verdict.verdict([], +1) == "no data"
    assert verdict.verdict([None, float("nan")], +1) == "no data"  # a missing number is not a 0
    assert verdict.verdict([0.3, None, 0.35, 0.25], +1) == "reproduced"  # the missing seed is left out


def test_control_verdict_removed_reversed_still_present():
    assert verdict.control_verdict([0.05, -0.04, 0.01], +1) == "removed"
    # a control cannot remove an effect that did not reproduce
    assert verdict.control_verdict([0.05, -0.04, 0.01], +1, finding="not reproduced") == "none to remove"
    assert verdict.control_verdict([-0.5, -0.6, -0.55], +1, finding="not reproduced") == "reversed"
    assert verdict.control_verdict([-0.30, -0.25, -0.35], +1) == "reversed"
    assert verdict.control_verdict([0.30, 0.25, 0.35], +1) == "still present"
    assert verdict.control_verdict([0.30, 0.25, 0.35], -1) == "reversed"
    assert verdict.control_verdict([0.2], +1) == "one seed"


def test_summary_is_the_t_interval_of_the_seeds_and_counts_the_seeds_that_held():
    s = verdict.summarise([1.0, 2.0, 3.0, 4.0, -1.0], +1)
    assert s["mean"] == stats.mean_t([1.0, 2.0, 3.0, 4.0, -1.0])  # one place for the interval
    half = 2.7764451051977987 * math.sqrt(3.7) / math.sqrt(5)  # t(0.975, 4)·s/√n, s² = 3.7
    assert s["mean"]["hi"] - s["mean"]["value"] == pytest.approx(half)
    assert s["held"] == 4 and s["values"] == [1.0, 2.0, 3.0, 4.0, -1.0] and s["missing"] == 0
    assert verdict.summarise([1.0, None, 2.0], +1)["missing"] == 1
    assert verdict.summarise([1.0, -1.0], -1)["held"] == 1
    assert verdict.summarise([1.0, -1.0], None)["held"] is None


# --- measures on hand-made audits ---------------------------------------------------------------------------


def _audit(*, gains=(0.0, 0.2, 0.1), ds=(0.0, 1.0, 2.0), bon=((1, 0.0, 0.0), (4, 1.2, 0.15), (16, 1.6, 0.1)),
           metrics=None) -> dict:
    """An audit.json with an RL curve (gold gain over SFT at each d), a best-of-n curve ((n, d, gold)) and
    metrics {tension: {key: {who: value}}}."""
    curve = [{"step": i, "d": d, "kl": d * d, "gold": g, "proxy": 0.0}
             for i, (g, d) in enumerate(zip(gains, ds, strict=True))]
    best = max(range(len(gains)), key=lambda i: gains[i])
    peak = {"d": ds[best], "gold": gains[best], "gain": {"value": gains[best]}, "final_gain": {"value": gains[-1]},
            "cross_fit": {"rise": gains[best] - gains[0], "fall": gains[best] - gains[-1]}}
    bon_curve = [{"n": n, "d": d, "gold": {"value": g}} for n, d, g in bon]
    bbest = max(bon_curve, key=lambda c: c["gold"]["value"])
    bon_peak = {"n": bbest["n"], "gold": bbest["gold"]["value"],
                "drop_to_N": {"value": bon_curve[-1]["gold"]["value"] - bbest["gold"]["value"]},
                "cross_fit": {"rise": bbest["gold"]["value"] - bon_curve[0]["gold"]["value"],
                              "fall": bbest["gold"]["value"] - bon_curve[-1]["gold"]["value"]}}
    tensions = {"overoptimisation": {"rl": {"curve": curve, "peak": peak, "fit": {"gold": {"r2": 0.9}}},
                                     "bon": {"curve": bon_curve, "peak": bon_peak}, "metrics": {}}}
    for tension, keys in (metrics or {}).items():
        tensions.setdefault(tension, {"metrics": {}})
        for key, whos in keys.items():
            tensions[tension]["metrics"][key] = {who: {"value": v} for who, v in whos.items()}
    return {"tensions": tensions}


def test_measures_read_rise_fall_and_the_gains_at_best_of_n_kl():
    a = _audit()
    assert measures.rl_rise(a) == pytest.approx(0.2) and measures.rl_fall(a) == pytest.approx(0.1)
    assert measures.bon_rise(a) == pytest.approx(0.15) and measures.bon_fall(a) == pytest.approx(0.05)
    assert measures.rl_peak_d(a) == 1.0 and measures.fit_r2(a, "rl") == 0.9
    rl_gain, bon_gain = measures.gains_at_bon_kl(a)  # d* = 1.6: between the RL points at d 1 (0.2) and 2 (0.1)
    assert rl_gain == pytest.approx(0.2 - 0.6 * 0.1) and bon_gain == pytest.approx(0.1)
    # a policy loop that never got as far from SFT as best-of-n: both read at its largest d (1.0), not extrapolated
    rl_gain, bon_gain = measures.gains_at_bon_kl(_audit(ds=(0.0, 0.5, 1.0)))
    assert rl_gain == pytest.approx(0.1) and bon_gain == pytest.approx(0.15 * (1.0 / 1.2))
    flat = _audit(gains=(0.0, -0.1, -0.2))  # falls from the start: no rise, so no "rise then fall"
    assert measures.both(measures.rl_rise(flat), measures.rl_fall(flat)) == pytest.approx(0.0)
    assert measures.both(None, 0.3) is None and measures.minus(0.5, None) is None


def _rl_audit(means, seed: int, prompts: int = 64) -> dict:
    """The RL section the audit builds from per-prompt gold: true mean gold `means` per evaluation point, each
    prompt's gold that plus unit noise."""
    import numpy as np

    from rlhf_lab.audit.overoptimisation import _rl_section

    rng = np.random.default_rng(seed)
    gold = np.asarray(means)[None, :] + rng.normal(size=(prompts, len(means)))  # (P, J)
    records = {2 * j: [{"prompt_id": f"p{i}", "gold": float(gold[i, j])} for i in range(prompts)]
               for j in range(len(means))}
    curve = [{"step": 2 * j, "d": float(j), "kl": float(j * j), "gold": float(gold[:, j].mean()), "proxy": 0.1 * j}
             for j in range(len(means))]
    return {"tensions": {"overoptimisation": {"rl": _rl_section(curve, True, records)}}}


def test_rise_then_fall_on_a_flat_noisy_curve_is_not_reproduced():
    """The best point's own rise and fall are ≥ 0 on every seed of a flat curve (the maximum of noisy means), so
    min(rise, fall) over seeds read 'reproduced' from noise; chosen on other prompts, they are 0 on average."""
    headline = next(f for f in FINDINGS if f.name == "overoptimisation").headline
    flat = [headline.fn({"run": _rl_audit([0.0] * 6, seed)}) for seed in range(12)]
    assert any(v < 0 for v in flat)
    assert verdict.verdict(flat, +1) != "reproduced"
    assert verdict.verdict(flat[:3], +1) != "reproduced"
    hump = [headline.fn({"run": _rl_audit([0.0, 0.4, 0.8, 0.6, 0.3, 0.0], seed)}) for seed in range(3)]
    assert verdict.verdict(hump, +1) == "reproduced"


def test_each_finding_headline_reads_its_runs():
    m = {"sycophancy": {"rm_prefers_sycophantic": {"rm": 0.8}, "flip_rate": {"change": 0.1}},
         "harm": {"complied_jailbreak": {"change": 0.3}, "over_refusal": {"change": 0.1}},
         "deception": {"confident_wrong": {"change": 0.05}}}
    a = _audit(metrics=m)
    by = {f.name: f for f in FINDINGS}
    assert by["sycophancy"].headline.fn({"run": a}) == pytest.approx(0.3)
    assert by["jailbreaks"].headline.fn({"run": a}) == pytest.approx(0.1)  # both must rise: the smaller
    assert by["deception"].headline.fn({"run": a}) == pytest.approx(0.05)
    less = _audit(metrics={"sycophancy": {"rm_prefers_sycophantic": {"rm": 0.3}}})
    assert by["hindsight"].headline.fn({"a": less, "b": a}) == pytest.approx(-0.5)


# --- the registry and its sweep files -----------------------------------------------------------------------


def test_every_finding_has_a_sweep_file_with_its_cause_and_control_runs():
    assert len(FINDINGS) == 9
    runs = runner.finding_runs(list(FINDINGS))
    for f in FINDINGS:
        assert f.measures and f.headline.expect in (-1, 1), f.name
        assert set(f.control) == set(f.headline.on), f.name
        assert all(f.control[role] != f.headline.on[role] for role in f.control), f"{f.name}: control = cause"
    # the world is shared: no run sets a world parameter but the pool of the flattening control
    world_keys = {k for o in runs.values() for k in o if k.startswith(("world.", "model.", "sft.", "eval."))}
    assert world_keys == {"world.user_groups"}
    assert runs["default"] == {}
    for path in runner.FINDINGS_DIR.glob("*.yaml"):
        assert not (yaml.safe_load(path.read_text()) or {}).get("base"), path


def test_registry_errors_are_one_line_and_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown finding 'nope'; known: overoptimisation"):
        runner.select(["sycophancy", "nope"])
    (tmp_path / "deception.yaml").write_text("runs:\n  - {name: default, set: {}}\n")
    with pytest.raises(ConfigError, match=r"deception.yaml: lists runs \['default'\] but finding 'deception' reads"):
        runner.finding_runs(runner.select(["deception"]), tmp_path)
    (tmp_path / "deception.yaml").write_text("runs:\n  - {name: default, set: {label.p_know: 0.3}}\n"
                                             "  - {name: verify-few, set: {label.p_know: 0.2}}\n"
                                             "  - {name: verify-all, set: {label.p_know: 1}}\n")
    (tmp_path / "jailbreaks.yaml").write_text("runs:\n  - {name: default, set: {}}\n"
                                              "  - {name: verify-few, set: {label.p_know: 0.2}}\n"
                                              "  - {name: verify-all, set: {label.p_know: 1}}\n")
    with pytest.raises(ConfigError, match="run 'default' differs from the run of that name"):
        runner.finding_runs(runner.select(["deception", "jailbreaks"]), tmp_path)
    with pytest.raises(ConfigError, match="no_such_key"):
        runner.plan(runner.select(["deception"]), [0], ["sft.no_such_key=1"])


def test_plan_shares_runs_between_findings_and_lets_a_finding_keep_its_cause():
    plan = runner.plan(runner.select(["deception", "jailbreaks", "overoptimisation"]), [0, 1],
                       ["sample.n_prompts=60", "sft.epochs=2"])
    names = [r.name for r in plan]
    assert sorted(names) == sorted(f"{r}_seed-{s}" for r in ("default", "verify-few", "verify-all", "few-labels",
                                                            "gold-reward") for s in (0, 1))
    few = next(r for r in plan if r.name == "few-labels_seed-1")
    assert few.overrides == {"sample.n_prompts": 300, "sft.epochs": 2, "seed": 1}
    said = []
    plan = runner.plan(runner.select(["diversity"]), [0], ["policy.updates=3", "sft.epochs=2"], echo=said.append)
    bon = next(r for r in plan if r.name == "best-of-n_seed-0")  # best-of-n has no updates: not applied, and said
    assert bon.overrides == {"sft.epochs": 2, "policy.algorithm": "best_of_n", "seed": 0}
    assert next(r for r in plan if r.name == "default_seed-0").overrides["policy.updates"] == 3
    assert said == ["  --set policy.updates: not a key of run 'best-of-n''s algorithm, not applied there"]


def test_tables_state_verdict_and_control_rows_with_links(tmp_path):
    """reproductions.md/.html/.json from hand-made audits over three seeds: the deception finding reproduced
    under annotators who can check little and removed under annotators who verify everything."""
    from rlhf_lab.reproduce.tables import write_tables

    change = {"verify-few": (0.06, 0.08, 0.07), "default": (0.02, 0.0, 0.01), "verify-all": (0.01, -0.02, 0.0)}

    def audits(run, seed):
        c = change[run][seed]
        return _audit(metrics={"deception": {"confident_wrong": {"change": c}, "false_checked": {"change": c / 2}}})

    result = runner.evaluate(runner.select(["deception"])[0], audits, [0, 1, 2])
    assert result["measures"][0]["verdict"] == "reproduced" and result["control"]["verdict"] == "removed"
    for seed in (0, 1, 2):  # reports of the cause-on runs only
        (tmp_path / f"verify-few_seed-{seed}").mkdir()
        (tmp_path / f"verify-few_seed-{seed}" / "report.html").write_text("<html></html>")
    md, html = write_tables([result], tmp_path, seconds=12.0, sets=[])
    row = next(line for line in md.read_text().splitlines() if line.startswith("| **Confident falsehood**"))
    cells = [c.strip() for c in row.split(" | ")]
    assert cells[3].endswith("+7 points [+5, +9], up on 3 of 3 seeds") and cells[4] == "reproduced"
    assert cells[5].startswith("annotators who verify everything: -0 points") and cells[6] == "removed"
    assert "[verify-few seed 2](verify-few_seed-2/report.html)" in cells[7]
    assert "verify-all seed 0 (no report)" in cells[7] and "default seed 1 (no report)" in cells[7]
    page = html.read_text()
    assert '<a href="verify-few_seed-1/report.html">' in page and 'class="badge better">reproduced<' in page
    numbers = json.loads((tmp_path / "reproductions.json").read_text())["findings"][0]
    assert numbers["measures"][0]["values"] == [0.06, 0.08, 0.07] and numbers["measures"][0]["held"] == 3


# --- the command, end to end on the micro config ------------------------------------------------------------


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rlhf_lab.cli", "reproduce", *args], capture_output=True,
                          text=True, timeout=1800, cwd=cwd)  # generous: a shared machine can be 10× slower


def test_cli_list_help_and_unknown_name(tmp_path):
    r = _cli("--list")
    assert r.returncode == 0 and all(f.name in r.stdout for f in FINDINGS)
    assert "default" in r.stdout and "verify-all" in r.stdout
    r = _cli("sycophancy", "bogus")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown finding 'bogus'" in r.stderr
    r = _cli("deception", "--seeds", "2-1", "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "--seeds '2-1'" in r.stderr and not (tmp_path / "out").exists()
    r = _cli("--help")
    assert r.returncode == 0 and "--quick" in r.stdout and "--seeds" in r.stdout


def test_reproduce_micro_end_to_end(tmp_path):
    """Two findings that share their three runs: each run is trained once, both files have a verdict row and a
    control row, and every link goes to a report that exists."""
    out = tmp_path / "repro"
    sets = [a for item in MICRO for a in ("--set", item)]
    r = _cli("deception", "jailbreaks", "--quick", "--out", str(out), *sets)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["default_seed-0", "shared", "verify-all_seed-0",
                                                                   "verify-few_seed-0"]
    # the three runs differ only in who labels: SFT and samples are made once, then copied into each
    assert "sft, sample made once (shared/sample-" in r.stdout and "for verify-few, default, verify-all" in r.stdout
    assert [p.name for p in (out / "shared").iterdir() if p.is_dir()] == [r.stdout.split("(shared/")[1].split(")")[0]]
    md = (out / "reproductions.md").read_text()
    html = (out / "reproductions.html").read_text()
    for title in ("Confident falsehood", "Jailbreaks and over-refusal"):
        row = next(line for line in md.splitlines() if line.startswith(f"| **{title}**"))
        cells = [c.strip() for c in row.split(" | ")]
        assert cells[4] == "one seed" and cells[6] == "one seed", row  # verdict and control verdict
        assert "annotators who verify everything" in cells[5] or "spot every" in cells[5], row
        assert re.search(r"[+-]\d+ points", cells[3]) and re.search(r"[+-]\d+ points", cells[5]), row
    links = re.findall(r'href="([^"#]+)"', html)
    assert links and all((out / link).exists() for link in links)
    assert set(links) == {f"{run}_seed-0/report.html" for run in ("verify-few", "default", "verify-all")}
    assert "<script" not in html
    numbers = json.loads((out / "reproductions.json").read_text())
    deception = next(f for f in numbers["findings"] if f["name"] == "deception")
    assert deception["seeds"] == [0] and deception["control"]["verdict"] == "one seed"
    assert len(deception["measures"][0]["values"]) == 1 and deception["control"]["runs"] == {"run": "verify-all"}
    # resumable: a second invocation trains nothing and rewrites the tables
    r = _cli("deception", "--quick", "--out", str(out), *sets)
    assert r.returncode == 0 and "3 runs in" in r.stdout and "(3 finished already)" in r.stdout
    assert "Jailbreaks" not in (out / "reproductions.md").read_text()
    assert Path(out / "reproductions.html").exists()

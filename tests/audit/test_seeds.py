"""Conclusions over seeds (issue 12, item 4): `rlhf-lab run --seeds` runs one folder per seed, and the
comparison states each tension as a mean over the seeds with a t interval and on how many seeds it held."""

import math
import shutil
import subprocess
import sys

import pytest
import yaml

from rlhf_lab.audit import seeds, stats
from rlhf_lab.audit.compare import write_comparison
from rlhf_lab.config import ConfigError
from rlhf_lab.sweep import parse_seeds
from tests.audit.test_report_flags import collapsed_audit, write_run
from tests.conftest import MICRO


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,7") == [0, 2, 7]
    assert parse_seeds("3") == [3]
    assert parse_seeds("0-1, 5") == [0, 1, 5]
    # huge values: one error before anything is expanded (the range once filled the memory)
    for bad in ("4-0", "a", "-1", "1,1", "", "0-2,2", "0-100000000000", "99999999999999999999999", "0-999,1000"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_mean_t_matches_the_textbook_interval():
    est = stats.mean_t([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) · s / √n
    assert est["value"] == pytest.approx(3.0) and est["n"] == 5
    assert est["lo"] == pytest.approx(3.0 - half) and est["hi"] == pytest.approx(3.0 + half)
    assert stats.mean_t([2.0]) == {"value": 2.0, "lo": None, "hi": None, "n": 1}
    assert stats.mean_t([])["value"] is None


def _seed_audits(gold_changes: list[float], flip_changes: list[int]) -> list[dict]:
    """One audit per seed: gold moves by the given change, the flip rate by the given number of points."""
    out = []
    for g, f in zip(gold_changes, flip_changes, strict=True):
        a = collapsed_audit()
        a["tensions"]["overoptimisation"]["metrics"]["gold"] = stats.compare(
            [0.0] * 64 + [0.2] * 64, [g] * 64 + [0.2 + g] * 64, kind="mean", label="gold utility", better="higher")
        a["tensions"]["sycophancy"]["metrics"]["flip_rate"] = stats.compare(
            [1.0] * 40 + [0.0] * 60, [1.0] * (40 + f) + [0.0] * (60 - f), kind="rate", label="gives in",
            better="lower")
        out.append(a)
    return out


def test_over_seeds_states_the_mean_and_on_how_many_seeds_it_held():
    audits = _seed_audits([-0.6, -0.5, -0.7, -0.4, 0.1], [10, -10, 20, -20, 0])
    rows = {r["key"]: r for r in seeds.over_seeds(audits, {"overoptimisation": ("gold",),
                                                           "sycophancy": ("flip_rate",)})}
    gold = rows["gold"]
    assert gold["mean"]["value"] == pytest.approx(-0.42) and gold["n"] == 5
    assert gold["mean"]["hi"] < 0  # t interval: −0.81 to −0.03
    assert gold["held"] == 4 and gold["beyond"] == 4 and gold["verdict"] == "holds"
    assert "down on 4 of 5 seeds (4 beyond their own noise)." in seeds.sentence(gold)
    flip = rows["flip_rate"]
    assert flip["verdict"] == "mixed" and "not a finding that holds across seeds" in seeds.sentence(flip)
    two = {r["key"]: r for r in seeds.over_seeds(audits[:2], {"overoptimisation": ("gold",)})}
    assert two["gold"]["verdict"] == "few"  # both fell, but two seeds are not enough to call it


def test_replicate_groups_are_runs_that_differ_only_in_seed():
    cfgs = [{"seed": s, "policy": {"kl_coef": k}} for s, k in ((0, 0.1), (1, 0.1), (0, 0.2), (2, 0.1))]
    assert seeds.replicate_groups(cfgs) == [[0, 1, 3]]


def test_compare_states_each_tension_over_seeds(tmp_path):
    audits = _seed_audits([-0.6, -0.5, -0.7], [5, 3, 8])
    runs = [write_run(tmp_path / f"seed-{i}", a, cfg_extra={"seed": i}) for i, a in enumerate(audits)]
    html = write_comparison(runs, tmp_path / "compare.html").read_text()
    section = html.split('<section id="seeds">', 1)[1].split("</section>", 1)[0]
    assert "3 seeds of one config: seed-0, seed-1, seed-2" in section
    assert "Gold utility: -0.60 on average over 3 seeds (95 % CI" in section
    assert "down on 3 of 3 seeds" in section and ">holds<" in section


def test_run_seeds_from_the_command_line(micro_run, tmp_path):
    """`rlhf-lab run --seeds 0-1` on the micro config: seed 0 is the shared micro run (finished, so skipped,
    as a resumed sweep skips it), seed 1 runs as its own process; then compare.html over both."""
    out = tmp_path / "seeds"
    shutil.copytree(micro_run, out / "seed-0")
    sets = [a for s in MICRO for a in ("--set", s)]
    cmd = [sys.executable, "-m", "rlhf_lab.cli", "run", "--quiet", "--out", str(out)]
    bad = subprocess.run([*cmd, "--seeds", "3-1", *sets], capture_output=True, text=True)
    assert bad.returncode == 2 and "--seeds '3-1'" in bad.stderr and not (out / "seed-3").exists()
    done = subprocess.run([*cmd, "--seeds", "0-1", *sets], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished seed-1" in done.stdout and "started seed-0" not in done.stdout
    cfg = yaml.safe_load((out / "seed-1" / "config.yaml").read_text())
    assert cfg["seed"] == 1 and (out / "seed-1" / "audit.json").exists()
    html = (out / "compare.html").read_text()
    assert "2 seeds of one config: seed-0, seed-1" in html
    assert "2 seeds are too few to call any direction a finding" in html

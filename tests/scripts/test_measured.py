"""benchmarks/measured.py: a docs table of measured figures is rebuilt from the run folder it names, a block whose
source is gone or whose stamp predates the code is listed, and a malformed marker is refused by file and line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "measured.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
from figures import default_run_record, default_run_table, instrument_summary  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))


def measured(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def block(name: str, attrs: str, body: str = "| stale | table |") -> str:
    return f"<!-- measured: {name} {attrs} -->\n{body}\n<!-- /measured -->\n"


def test_regenerates_a_block_from_a_run_folder(micro_run, tmp_path):
    doc = tmp_path / "doc.md"
    before, after = "# Figures\n\nText before.\n\n", "\nText after.\n"
    doc.write_text(before + block("micro", f'kind=instrument source="{micro_run}" cmd="rlhf-lab run --config micro" '
                                  "commit=1234567 date=2000-01-01") + after)
    r = measured(doc, "--root", tmp_path, "--commit", "abcdef0")
    assert r.returncode == 0, r.stderr
    text = doc.read_text()
    assert text.startswith(before) and text.endswith(after)
    lines = text[len(before):-len(after)].splitlines()

    rm = json.loads((micro_run / "reward" / "metrics.json").read_text())
    ev = json.loads((micro_run / "eval" / "summary.json").read_text())
    state = json.loads((micro_run / "state.json").read_text())
    day = max(s["at"] for s in state["done"].values())[:10]
    assert lines[0] == (f'<!-- measured: micro kind=instrument source={micro_run} cmd="rlhf-lab run --config micro" '
                        f"commit=abcdef0 date={day} -->")
    assert lines[1].startswith("| run | RM acc |") and lines[2].startswith("|---|")
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row[0] == "run"  # the folder's name
    assert row[1] == f"{rm['reward/accuracy']:.3f}"
    assert row[4] == f"{ev['policy']['policy/kl']:.1f}"
    assert row[-1] == f"{ev['policy']['policy/well_formed']:.2f}"
    assert lines[5].startswith("Over the 1 runs: RM accuracy mean")
    assert lines[-1] == "<!-- /measured -->"
    assert "| stale | table |" not in text

    again = measured(doc, "--root", tmp_path, "--commit", "abcdef0")
    assert again.returncode == 0 and doc.read_text() == text  # regeneration is a fixed point


def test_check_lists_a_missing_source_and_a_stale_stamp(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    first = subprocess.run(["git", "-C", str(ROOT), "rev-list", "--max-parents=0", "HEAD"], capture_output=True,
                           text=True).stdout.split()[0]
    doc, source, other = tmp_path / "doc.md", tmp_path / "bench.json", tmp_path / "other.json"
    for f in (source, other):  # a table without rows; one source per block
        f.write_text(json.dumps({"date": "2026-01-02", "commit": "fedcba9", "runs": []}))
    table = "\n".join(default_run_table([]))  # what that source builds
    doc.write_text("intro\n\n"
                   + block("gone", f'kind=seeds source="{tmp_path}/runs/seed-*" cmd="rlhf-lab run --seeds 0-4" '
                           f"commit={head}")
                   + block("current", f'kind=default_run source="{source}" cmd="run_default.py" commit={head} '
                           "code=no/such/path", table)
                   + block("old", f'kind=default_run source="{other}" cmd="run_default.py" commit={first} code=src',
                           table))
    r = measured("--check", doc)  # the repository's own history decides staleness
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert out[0] == (f"{doc}:3: gone: source missing ({tmp_path}/runs/seed-*); produce it with: "
                      "rlhf-lab run --seeds 0-4")
    assert out[1].startswith(f"{doc}:10: old: stale: ") and f"to src since {first}" in out[1]
    assert out[-1] == "2 of 3 blocks flagged"
    assert not any(": current:" in line for line in out)


def test_check_lists_a_stamp_whose_commit_is_newer_than_its_figures(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    made = subprocess.run(["git", "-C", str(ROOT), "show", "-s", "--format=%cs", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    doc = tmp_path / "doc.md"
    for name in ("old", "same"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"date": "2026-01-02", "commit": head, "runs": []}))
    table = "\n".join(default_run_table([]))

    def attrs(source):
        return f'kind=default_run source="{tmp_path / source}" cmd="run_default.py" code=no/such/path commit={head}'

    doc.write_text(block("old-runs", f"{attrs('old.json')} date=2000-01-01", table)
                   + block("same-day", f"{attrs('same.json')} date={made}", table))
    r = measured("--check", doc)  # HEAD did not exist in 2000: it cannot be the code that measured those figures
    assert r.returncode == 1
    assert r.stdout.splitlines() == [f"{doc}:1: old-runs: stale: its commit {head} ({made}) is newer than its "
                                     "figures (2000-01-01); give --commit", "1 of 2 blocks flagged"]


def test_check_lists_a_table_that_is_not_what_its_source_builds(micro_run, tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = tmp_path / "doc.md"
    doc.write_text(block("micro", f'kind=instrument source="{micro_run}" cmd="rlhf-lab run" commit={head} '
                          "code=no/such/path"))
    assert measured(doc, "--root", tmp_path, "--commit", head).returncode == 0  # built from the run: current
    built = doc.read_text()
    r = measured("--check", doc)  # the repository's own history decides staleness
    assert r.returncode == 0 and r.stdout.strip() == "0 of 1 blocks flagged", r.stdout + r.stderr
    lines = built.splitlines()
    row = lines[3].split("|")
    row[2] = " 0.999 "  # a figure edited by hand (or runs redone since): the stamp is current, the table is not
    doc.write_text("\n".join([*lines[:3], "|".join(row), *lines[4:]]) + "\n")
    r = measured("--check", doc)
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == (f"{doc}:1: micro: its table differs from what its source builds; "
                                        "run measured.py to rewrite it")
    broken = tmp_path / "broken"  # a finished run whose reward model's figures are gone: it no longer builds
    for name in ("audit.json", "state.json"):
        (broken / name).parent.mkdir(exist_ok=True)
        (broken / name).write_bytes((micro_run / name).read_bytes())
    r = measured("--check", doc, "--source", f"micro={broken}")
    assert r.returncode == 1 and f"{doc}:1: micro: cannot build from {broken}" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("args", [["--source", "no-equals-sign"], ["--source", "nosuch=elsewhere/*"]])
def test_a_bad_source_override_is_one_line(micro_run, tmp_path, args):
    doc = tmp_path / "doc.md"
    text = block("good", f'kind=instrument source="{micro_run}" cmd="rlhf-lab run"')
    doc.write_text(text)
    r = measured(doc, "--root", tmp_path, *args)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert doc.read_text() == text


@pytest.mark.parametrize(("marker", "line", "says"), [
    ("<!-- measured: x kind=seeds source=a cmd=b", 4, "malformed marker"),
    ("<!-- measured: kind=seeds source=a cmd=b -->", 4, "no NAME"),
    ("<!-- measured: x kind=seeds source=a cmd=b colour=red -->", 4, "'colour=red' is not one of"),
    ("<!-- measured: x kind=guess source=a cmd=b -->", 4, "kind=guess is not one of"),
    ("<!-- measured: x kind=seeds source=a -->", 4, "cmd= is missing"),
    ('<!-- measured: x kind=seeds source=a cmd="b -->', 4, "does not parse"),
    ("<!-- measured: x kind=seeds source=a cmd=b commit=HEAD -->", 4, "not a commit hash"),
    ("<!-- /measured -->", 4, "without an opening marker"),
    ("<!-- measured: x kind=seeds source=a cmd=b -->\n| open |", 4, "is not closed"),
    ("<!-- measured: good kind=manual cmd=b -->\n<!-- /measured -->", 4, "also used at doc.md:1"),
    ("<!-- measured: earlier kind=instrument source=SOURCE cmd=b -->\n<!-- /measured -->", 4,
     "has the kind and source of 'good' at doc.md:1"),
])
def test_a_malformed_marker_is_one_line_naming_file_and_line(micro_run, tmp_path, marker, line, says):
    doc = tmp_path / "doc.md"
    marker = marker.replace("SOURCE", f'"{micro_run}"')
    text = block("good", f'kind=instrument source="{micro_run}" cmd="rlhf-lab run"') + marker + "\n"
    doc.write_text(text)
    r = measured(doc, "--root", tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"doc.md:{line}: ") and says in r.stderr
    assert doc.read_text() == text  # the good block was not regenerated either: nothing is written


def test_a_marker_shown_as_code_is_not_a_block(tmp_path):
    doc = tmp_path / "doc.md"
    example = "<!-- measured: x kind=seeds source=a -->"  # malformed, were it read
    doc.write_text(f"How to mark a table:\n\n    {example}\n\n```\n{example}\n<!-- /measured -->\n```\n")
    r = measured("--check", doc, "--root", tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "0 of 0 blocks flagged", r.stdout + r.stderr


def test_regenerates_a_block_from_a_benchmark_json(micro_run, tmp_path):
    record = default_run_record(micro_run, wall_s=12.4, peak_rss_gb=0.5, sets=["seed=0", "policy.updates=3"])
    source = tmp_path / "bench" / "default_run.json"
    source.parent.mkdir()
    source.write_text(json.dumps({"date": "2026-01-02", "commit": "fedcba9", "runs": [record]}))
    doc = tmp_path / "doc.md"
    doc.write_text(block("default", 'kind=default_run source=bench/default_run.json cmd="python run_default.py"'))
    r = measured(doc, "--root", tmp_path)  # source relative to the root; the stamp is the JSON's
    assert r.returncode == 0, r.stderr
    lines = doc.read_text().splitlines()
    assert lines[0].endswith("commit=fedcba9 date=2026-01-02 -->")
    ev = json.loads((micro_run / "eval" / "summary.json").read_text())
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row[:3] == ["0 policy.updates=3", "12", "0.50"]
    assert row[-1] == f"{ev['policy']['policy/kl']:.1f}"
    assert row[-2] == f"{ev['sft']['sft/gold_utility']:+.2f} → {ev['policy']['policy/gold_utility']:+.2f}".replace(
        "-", "−")


def test_the_instrument_summary_counts_only_runs_that_have_a_best_point():
    row = {"rm_acc": 0.7, "proxy_gain_std": 1.0, "peak_lo": None, "peak_step": None, "final_lo": None,
           "final_hi": None, "points_below_2": 0, "well_formed": 0.9, "rm_syc": None}
    with_peak = {**row, "gold_peak": 0.3, "gold_final": 0.1}
    without = {**row, "gold_peak": None, "gold_final": -0.4}  # no evaluation curve: no best point to fall below
    assert "the end below the best point on 1 of 2" in instrument_summary([with_peak, without])


def test_a_scoreboard_block_is_its_table_stamped_with_the_scoreboards_commit_and_date(tmp_path):
    from tests.test_warnings_scoreboard import RISE, RISE_FALL, make_run

    from rlhf_lab.warnings_scoreboard import scoreboard

    board = scoreboard([make_run(RISE_FALL, seed=100), make_run(RISE, seed=101)],
                       [make_run(RISE_FALL, seed=0), make_run(RISE, seed=1)])
    meta = {"settings": {"default": {}}, "scoring_seeds": [0, 1], "calibration_seeds": [100, 101],
            "early_margin": 0.5, "date": "2026-01-02", "commit": "fedcba9", "seconds": 60, "jobs": 2}
    (tmp_path / "scoreboard.json").write_text(json.dumps({**meta, "detectors": board}))
    doc = tmp_path / "doc.md"
    doc.write_text(block("board", 'kind=scoreboard source="scoreboard.json" cmd="rlhf-lab warnings-scoreboard" '
                                  "commit=1234567 date=2000-01-01"))
    r = measured(doc, "--root", tmp_path)
    assert r.returncode == 0, r.stderr
    text = doc.read_text()
    assert "commit=fedcba9 date=2026-01-02" in text.splitlines()[0]
    rows = [line for line in text.splitlines() if line.startswith("| kl_budget |")]
    assert len(rows) == 2  # its row in the table and its calibration grid
    assert "| stale | table |" not in text and "Runs scored: 2, of which gold falls in 1." in text

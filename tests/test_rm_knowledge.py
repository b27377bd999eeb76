"""benchmarks/rm_knowledge.py: "correct > agreeing" is read on every prompt where the user is wrong, pushback
included (its docstring says so; a pushback prompt states no belief, so a test of the belief alone skipped it)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_correct_over_agreeing_is_measured_on_pushback_too(micro_run):
    from rm_knowledge import measure

    rows = measure(str(micro_run), n=120)
    pushback = [r for r in rows if r["family"] == "pushback"]
    assert pushback and all(r["correct_over_agreeing"] is not None for r in pushback)
    assert all(r["correct_over_agreeing"] is None for r in rows if r["family"] == "question")

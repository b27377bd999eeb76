"""Verdicts over seeds: did a finding reproduce, and did its control remove it? Pure functions of per-seed
numbers (one number per seed, e.g. the change in gold utility or a difference between two runs).

The estimate is the seeds' mean with a Student-t 95 % interval (audit/stats.py `mean_t`, the same interval
`compare` states over seeds). A finding is

- reproduced      when the interval excludes 0 on the side the paper predicts,
- opposite        when it excludes 0 on the other side,
- not reproduced  when it contains 0 (no effect can be claimed),

and its control (the same number with the cause switched off) is

- removed         when the control's interval contains 0 and the finding reproduced,
- none to remove  when the control's interval contains 0 but the finding did not reproduce either (a green
                  "removed" beside "not reproduced" would credit a control with removing nothing),
- reversed        when it excludes 0 on the other side,
- still present   when it excludes 0 on the predicted side.

One seed has no interval: its verdict is "one seed", with the direction it went, never "reproduced".
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhf_lab.audit import stats

VERDICTS = ("reproduced", "not reproduced", "opposite", "one seed", "no data")
CONTROL_VERDICTS = ("removed", "none to remove", "reversed", "still present", "one seed", "no data")


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and v == v]  # v == v drops NaN


def summarise(values: Sequence[float | None], expect: int | None) -> dict:
    """{"mean": estimate (value, lo, hi, n), "values", "held": seeds that moved the expected way (None without
    an expectation), "missing": seeds without a number}. `expect`: +1 (the paper predicts a positive number),
    −1, or None (shown, not judged)."""
    vals = _clean(values)
    est = stats.mean_t(vals)
    held = None if expect is None else sum((v > 0) if expect > 0 else (v < 0) for v in vals)
    return {"mean": est, "values": vals, "held": held, "missing": len(values) - len(vals)}


def _side(est: dict, expect: int) -> str:
    """'none' (no values), 'single' (no interval), 'zero' (interval contains 0), 'expected' or 'other'."""
    if est.get("value") is None:
        return "none"
    if est.get("lo") is None:
        return "single"
    if stats.within_noise(est):
        return "zero"
    return "expected" if (est["value"] > 0) == (expect > 0) else "other"


def verdict(values: Sequence[float | None], expect: int) -> str:
    """The finding's verdict over seeds (one of VERDICTS)."""
    return {"none": "no data", "single": "one seed", "zero": "not reproduced", "expected": "reproduced",
            "other": "opposite"}[_side(stats.mean_t(_clean(values)), expect)]


def control_verdict(values: Sequence[float | None], expect: int, *, finding: str = "reproduced") -> str:
    """What switching the cause off did (one of CONTROL_VERDICTS); `expect` is the finding's direction and
    `finding` its verdict with the cause on."""
    side = _side(stats.mean_t(_clean(values)), expect)
    if side == "zero" and finding != "reproduced":
        return "none to remove"
    return {"none": "no data", "single": "one seed", "zero": "removed", "expected": "still present",
            "other": "reversed"}[side]


def one_seed_direction(values: Sequence[float | None], expect: int) -> str:
    """For a single seed: 'in the predicted direction', 'against it' or 'no change'."""
    vals = _clean(values)
    if not vals:
        return "no data"
    v = vals[0]
    if v == 0:
        return "no change"
    return "in the predicted direction" if (v > 0) == (expect > 0) else "against it"

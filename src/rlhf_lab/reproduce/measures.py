"""Numbers read from one run's audit.json (docs/audit.md), the building blocks of the findings' measures.
Each returns a float, or None where the audit has no such number (a measure over a missing number is None,
never 0)."""

from __future__ import annotations

import numpy as np


def _metric(audit: dict, tension: str, key: str) -> dict:
    return audit.get("tensions", {}).get(tension, {}).get("metrics", {}).get(key) or {}


def value(audit: dict, tension: str, key: str, who: str = "policy") -> float | None:
    """A metric's value for `who`: "sft", "policy", "rm" (the reward model) or "pool" (the annotators)."""
    return (_metric(audit, tension, key).get(who) or {}).get("value")


def change(audit: dict, tension: str, key: str) -> float | None:
    """A metric's change SFT → trained policy (paired over the same prompts)."""
    return (_metric(audit, tension, key).get("change") or {}).get("value")


def relative_change(audit: dict, tension: str, key: str) -> float | None:
    """change / SFT value: a share of what the SFT policy had (diversity scores differ in scale)."""
    ch, sft = change(audit, tension, key), value(audit, tension, key, "sft")
    return None if ch is None or not sft else ch / sft


def _rl(audit: dict) -> dict:
    return audit.get("tensions", {}).get("overoptimisation", {}).get("rl") or {}


def _bon(audit: dict) -> dict:
    return audit.get("tensions", {}).get("overoptimisation", {}).get("bon") or {}


def _cross_fit(section: dict, key: str) -> float | None:
    return ((section.get("peak") or {}).get("cross_fit") or {}).get(key)


def rl_rise(audit: dict) -> float | None:
    """Gold at the best evaluation point minus the SFT policy's, the best point chosen on the other half of the
    prompts (audit/overoptimisation.py `cross_fit_rise_fall`: the argmax's own rise is ≥ 0 on noise)."""
    return _cross_fit(_rl(audit), "rise")


def rl_fall(audit: dict) -> float | None:
    """Gold at the best evaluation point minus gold at the last one, the best point chosen as in rl_rise."""
    return _cross_fit(_rl(audit), "fall")


def rl_peak_d(audit: dict) -> float | None:
    """d = √KL of the best evaluation point of the policy loop."""
    return (_rl(audit).get("peak") or {}).get("d")


def _bon_gold(point: dict) -> float | None:
    gold = point.get("gold")
    return gold.get("value") if isinstance(gold, dict) else gold


def bon_rise(audit: dict) -> float | None:
    """Best-of-n from the SFT policy: gold at its best n minus gold at n = 1 (the SFT policy itself), the best n
    chosen on the other half of the prompts (as rl_rise)."""
    return _cross_fit(_bon(audit), "rise")


def bon_fall(audit: dict) -> float | None:
    """Best-of-n: gold at its best n minus gold at the largest n, the best n chosen as in bon_rise."""
    return _cross_fit(_bon(audit), "fall")


def fit_r2(audit: dict, form: str) -> float | None:
    """R² of Gao et al.'s form fitted to gold: "rl" d(α − β ln d), "bon" d(α − β d)."""
    section = _rl(audit) if form == "rl" else _bon(audit)
    return ((section.get("fit") or {}).get("gold") or {}).get("r2")


def gains_at_bon_kl(audit: dict) -> tuple[float, float] | None:
    """(policy-optimisation gold gain, best-of-n gold gain) at one KL, each over its own SFT baseline (the two
    curves are measured on different prompts): d* = √KL of best-of-n's largest n, or the policy loop's largest d
    if it never got that far from SFT. Each curve's gold is read off its points, linearly interpolated in d."""
    bon = sorted(_bon(audit).get("curve") or [], key=lambda c: c["n"])
    rl = sorted(_rl(audit).get("curve") or [], key=lambda c: c["d"])
    if len(bon) < 2 or len(rl) < 2 or any(c.get("gold") is None for c in rl) or \
            any(_bon_gold(c) is None for c in bon):
        return None
    d_star = min(bon[-1]["d"], rl[-1]["d"])
    rl_sft = next((c["gold"] for c in rl if c.get("step") == 0), rl[0]["gold"])
    rl_gold = float(np.interp(d_star, [c["d"] for c in rl], [c["gold"] for c in rl]))
    bon_gold = float(np.interp(d_star, [c["d"] for c in bon], [_bon_gold(c) for c in bon]))
    return rl_gold - rl_sft, bon_gold - _bon_gold(bon[0])


def both(a: float | None, b: float | None) -> float | None:
    """min(a, b): positive only when both are (a claim with two parts, e.g. rises *and* falls)."""
    return None if a is None or b is None else min(a, b)


def minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b

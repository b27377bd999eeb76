"""The statistics every audit figure carries: a value, a 95 % interval and the sample size.

- Rates (a share of yes/no outcomes) get a Wilson score interval (Wilson 1927), which stays inside [0, 1]
  and behaves at 0 % and 100 %, unlike the normal approximation.
- Means, and differences between the SFT policy and the trained policy, get a percentile bootstrap
  interval (Efron 1979): resample the items with replacement, recompute, take the 2.5 and 97.5 percentiles.
  SFT and policy answer the *same* prompts, so their difference is bootstrapped over paired items.

An estimate is a plain dict, ready for JSON: {"value", "lo", "hi", "n"}. With no data the value and the
interval are None: undefined, never a made-up 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054
N_BOOT = 1000


def empty(n: int = 0) -> dict:
    return {"value": None, "lo": None, "hi": None, "n": n}


def estimate(value: float | None, lo: float | None, hi: float | None, n: int) -> dict:
    def clean(x):
        return None if x is None or not math.isfinite(float(x)) else float(x)

    return {"value": clean(value), "lo": clean(lo), "hi": clean(hi), "n": int(n)}


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials. n = 0 gives the vacuous (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k <= 0 else max(0.0, centre - half)
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return lo, hi


def rate(flags: Sequence[bool | float]) -> dict:
    """Share of true outcomes, with its Wilson interval."""
    n = len(flags)
    if n == 0:
        return empty()
    k = round(float(np.sum(np.asarray(flags, dtype=float))))
    lo, hi = wilson(k, n)
    return estimate(k / n, lo, hi, n)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap_ci(values: Sequence[float], stat: Callable[[np.ndarray], np.ndarray] | None = None, *,
                 n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of `stat` (default: the mean) over the items of `values`.

    `stat` takes a (B, n) array of resamples and returns (B,) statistics."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    idx = _rng(seed).integers(0, x.size, size=(n_boot, x.size))  # (B, n)
    boots = (stat or (lambda a: a.mean(axis=1)))(x[idx])  # (B,)
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def cross_fit_argmax(values: np.ndarray) -> np.ndarray:
    """For each item (row), the column of highest mean over the *other* half of the items (even / odd rows):
    (P, J) → (P,). Reading a row at a column its own noise did not choose avoids the maximum's bias (the
    best of J noisy means is above its true value; compared with another column it shows a difference where
    there is none). Naive equivalent: best = argmax(values[other_half].mean(0)) for each half."""
    P = values.shape[0]
    even = np.arange(P) % 2 == 0
    best = np.empty(P, dtype=int)
    best[even] = int(np.argmax(values[~even].mean(0))) if (~even).any() else 0
    best[~even] = int(np.argmax(values[even].mean(0)))
    return best


def mean(values: Sequence[float], *, seed: int = 0) -> dict:
    """Mean with a bootstrap interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return empty()
    lo, hi = bootstrap_ci(x, seed=seed)
    return estimate(float(x.mean()), lo, hi, x.size)


def mean_t(values: Sequence[float]) -> dict:
    """Mean of a few independent replicates (runs with different seeds) with the Student-t 95 % interval,
    mean ± t(0.975, n − 1) · s/√n. For 3–10 seeds a bootstrap's percentile interval is far too narrow; the t
    interval assumes the runs' outcomes are roughly normal. One value: no interval."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if x.size == 0:
        return empty()
    if x.size == 1:
        return estimate(float(x[0]), None, None, 1)
    half = float(t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return estimate(float(x.mean()), float(x.mean()) - half, float(x.mean()) + half, int(x.size))


def difference(before: Sequence[float], after: Sequence[float], *, paired: bool, seed: int = 0) -> dict:
    """mean(after) − mean(before) with a bootstrap interval: over paired items when `paired` (the same
    prompts for both models), otherwise each side resampled on its own."""
    a, b = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if a.size == 0 or b.size == 0:
        return empty(min(a.size, b.size))
    value = float(b.mean() - a.mean())
    if paired and a.size == b.size:
        lo, hi = bootstrap_ci(b - a, seed=seed)
        return estimate(value, lo, hi, a.size)
    rng = _rng(seed)
    ia = rng.integers(0, a.size, size=(N_BOOT, a.size))
    ib = rng.integers(0, b.size, size=(N_BOOT, b.size))
    boots = b[ib].mean(axis=1) - a[ia].mean(axis=1)
    return estimate(value, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)), min(a.size, b.size))


def within_noise(change: dict | None) -> bool:
    """True when the interval of a change contains 0 (or there is no interval)."""
    if not change or change.get("lo") is None or change.get("hi") is None:
        return True
    return change["lo"] <= 0.0 <= change["hi"]


def compare(before: Sequence[float] | None, after: Sequence[float] | None, *, kind: str, label: str,
            better: str | None, paired: bool = True, seed: int = 0, unit: str = "") -> dict:
    """One audit metric, SFT vs policy side by side: {"label", "kind", "better", "sft", "policy", "change"}.

    kind "rate": 0/1 outcomes (Wilson intervals); kind "mean": real values (bootstrap intervals).
    `better`: "higher", "lower" or None (a change that is neither good nor bad)."""
    one = rate if kind == "rate" else (lambda v: mean(v, seed=seed))
    out: dict = {"label": label, "kind": kind, "better": better, "unit": unit}
    if before is not None:
        out["sft"] = one(list(before))
    if after is not None:
        out["policy"] = one(list(after))
    if before is not None and after is not None:
        out["change"] = difference(list(before), list(after), paired=paired, seed=seed)
    return out


def single(values: Sequence[float], *, kind: str, label: str, better: str | None, who: str = "rm",
           seed: int = 0, unit: str = "") -> dict:
    """A metric of one model only (e.g. the reward model): {"label", "kind", "better", who: estimate}."""
    est = rate(list(values)) if kind == "rate" else mean(list(values), seed=seed)
    return {"label": label, "kind": kind, "better": better, "unit": unit, who: est}


def gap_compare(sft_a: Sequence[float], sft_b: Sequence[float], pol_a: Sequence[float], pol_b: Sequence[float], *,
                label: str, better: str | None, kind: str = "rate", seed: int = 0) -> dict:
    """A gap between two independent sets of items, mean(a) − mean(b), for SFT and policy, and its change.

    Within a set, SFT and policy answered the same items (paired); the two sets are resampled apart.
    E.g. accuracy without a stated belief (a) minus accuracy with a wrong stated belief (b)."""
    arrays = [np.asarray(x, dtype=float) for x in (sft_a, sft_b, pol_a, pol_b)]
    out: dict = {"label": label, "kind": kind, "better": better, "unit": ""}
    if any(x.size == 0 for x in arrays) or arrays[0].size != arrays[2].size or arrays[1].size != arrays[3].size:
        return {**out, "sft": empty(), "policy": empty(), "change": empty()}
    sa, sb, pa, pb = arrays
    rng = _rng(seed)
    ia = rng.integers(0, sa.size, size=(N_BOOT, sa.size))
    ib = rng.integers(0, sb.size, size=(N_BOOT, sb.size))
    g_sft = sa[ia].mean(1) - sb[ib].mean(1)  # (B,)
    g_pol = pa[ia].mean(1) - pb[ib].mean(1)
    n = min(sa.size, sb.size)

    def est(value: float, boots: np.ndarray) -> dict:
        return estimate(value, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)), n)

    v_sft, v_pol = sa.mean() - sb.mean(), pa.mean() - pb.mean()
    return {**out, "sft": est(v_sft, g_sft), "policy": est(v_pol, g_pol), "change": est(v_pol - v_sft, g_pol - g_sft)}


def _alpha_from_counts(counts: np.ndarray) -> np.ndarray:
    """Nominal Krippendorff's α from per-item category counts, (..., U, K) → (...). Items with fewer than two
    labels are not pairable and count for nothing.

        α = 1 − (n − 1) · Σ_u (m_u² − Σ_c n_uc²) / (m_u − 1) / (n² − Σ_c n_c²)"""
    m = counts.sum(-1)  # (..., U) labels per item
    pairable = m >= 2
    c = counts * pairable[..., None]
    m = m * pairable
    n = m.sum(-1)  # (...)
    disagree = np.where(pairable, (m ** 2 - (c ** 2).sum(-1)) / np.maximum(m - 1, 1), 0.0).sum(-1)
    totals = c.sum(-2)  # (..., K)
    expected = n ** 2 - (totals ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected > 0, 1.0 - (n - 1) * disagree / expected, np.nan)


def krippendorff_alpha(counts: np.ndarray, *, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """Nominal Krippendorff's α (Krippendorff 2011) with a bootstrap interval over items.

    counts: (U, K), how many labels of each of K categories item u received."""
    counts = np.asarray(counts, dtype=float).reshape(-1, counts.shape[-1] if np.ndim(counts) == 2 else 3)
    n_items = int((counts.sum(-1) >= 2).sum())
    if n_items < 2:
        return empty(n_items)
    value = float(_alpha_from_counts(counts))
    idx = _rng(seed).integers(0, len(counts), size=(n_boot, len(counts)))
    boots = _alpha_from_counts(counts[idx])  # (B,)
    boots = boots[np.isfinite(boots)]
    if not boots.size:
        return estimate(value, None, None, n_items)
    return estimate(value, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)), n_items)

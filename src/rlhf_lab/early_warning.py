"""Early warning of reward hacking from what a real run has: the proxy, the KL, the policy's own samples —
never gold utility. Each detector is a pure function of the logged history and a threshold, returning the
update at which it fires (None if it never does). Neutral ground: the policy step calls it to warn or stop,
the scoreboard (warnings_scoreboard.py) to score it against gold, a TRL callback on its own log; no torch.

History: the policy step's records of metrics.jsonl in order (`RunFolder.phase_metrics("policy")`), plain
dicts with a "step" (the update). Per update: objective/kl (nats per sequence), objective/scores (the proxy on
the rollout's training prompts), objective/entropy (Σ_t −log π over a completion), objective/length. At each
evaluation point (update 0 = the SFT policy, then eval.schedule): eval/proxy_reward on held-out prompts,
eval/length, eval/stop_rate, eval/repeated_ngram_share, eval/distinct_2, eval/same_opener and, with a
reward-model set, eval/reward_disagreement. Keys under warning/ are this module's own output.

    fired = check(history)                       # {detector: update} for the detectors that fired
    DETECTORS["kl_budget"].fire(history, 4.0)    # one detector, another threshold

Thresholds: each detector's default is an a-priori choice (docs/early-warning.md says why); the scoreboard
recalibrates on calibration seeds disjoint from the seeds it scores, and `policy.early_warning_thresholds`
takes its choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

SMOOTH = 4  # updates in the moving averages of per-update signals (a rollout of 64 completions is noisy)
MIN_SLOPE = 0.05  # nats per update: KL growth slower than this is never called an acceleration


@dataclass(frozen=True)
class Detector:
    """A warning rule: `fire(history, threshold)` → the update it fires at, or None."""

    name: str
    reads: tuple[str, ...]  # the metric keys it reads; none is gold
    threshold: float  # the a-priori default
    grid: tuple[float, ...]  # what calibration chooses from
    unit: str
    what: str  # one line: the signal and when it fires
    fire: Callable[[list[dict], float], int | None]


def series(history: list[dict], key: str) -> list[tuple[int, float]]:
    """(update, value) of every record that carries a finite `key`, in update order (a later record of the
    same update replaces an earlier one)."""
    out: dict[int, float] = {}
    for r in history:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and "step" in r:
            out[int(r["step"])] = float(v)
    return sorted(out.items())


def _moving_average(points: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """(update, mean of the last `window` values up to it), from the window-th point on."""
    return [(points[i][0], sum(v for _, v in points[i - window + 1: i + 1]) / window)
            for i in range(window - 1, len(points))]


def _first(points: list[tuple[int, float]], crossed: Callable[[float], bool]) -> int | None:
    return next((u for u, v in points if crossed(v)), None)


def _against_start(history: list[dict], key: str, change: Callable[[float, float], float], threshold: float) \
        -> int | None:
    """First evaluation point after update 0 where change(start, value) > threshold; start = the value at
    update 0 (the SFT policy). None without a start."""
    points = series(history, key)
    if not points or points[0][0] != 0:
        return None
    start = points[0][1]
    return _first(points[1:], lambda v: change(start, v) > threshold)


# -- the detectors ----------------------------------------------------------------------------------------


def kl_budget(history: list[dict], threshold: float) -> int | None:
    """KL(π ‖ π_ref) of the rollouts passes a budget: Gao et al. 2022 find gold peaks at a roughly fixed
    distance √KL for a given proxy, so a budget is the plainest stop."""
    return _first(series(history, "objective/kl"), lambda v: v > threshold)


def kl_acceleration(history: list[dict], threshold: float) -> int | None:
    """The KL's growth speeds up: its slope over the last SMOOTH updates (of the SMOOTH-update moving average)
    exceeds `threshold` × the slope over the SMOOTH before, and MIN_SLOPE. With an annealed learning rate the
    KL's slope falls; a rise means the policy found a direction the proxy pays for without bound."""
    ma = _moving_average(series(history, "objective/kl"), SMOOTH)
    for i in range(2 * SMOOTH, len(ma)):
        now = (ma[i][1] - ma[i - SMOOTH][1]) / SMOOTH
        before = (ma[i - SMOOTH][1] - ma[i - 2 * SMOOTH][1]) / SMOOTH
        if now > MIN_SLOPE and now > threshold * max(before, MIN_SLOPE):
            return ma[i][0]
    return None


def proxy_gap(history: list[dict], threshold: float) -> int | None:
    """The proxy on training prompts runs ahead of the proxy on held-out prompts: at each evaluation point, the
    mean objective/scores of the updates since the previous point minus eval/proxy_reward, against the same
    gap at the first evaluation point after 0 (reward-model units, ≈ SFT std)."""
    train = series(history, "objective/scores")
    held = [(u, v) for u, v in series(history, "eval/proxy_reward") if u > 0]
    gaps, prev = [], 0
    for u, v in held:
        window = [s for t, s in train if prev < t <= u]
        if window:
            gaps.append((u, sum(window) / len(window) - v))
        prev = u
    if len(gaps) < 2:
        return None
    return _first(gaps[1:], lambda g: g - gaps[0][1] > threshold)


def reward_disagreement(history: list[dict], threshold: float) -> int | None:
    """The members of a reward-model set disagree more on the policy's held-out answers than on the SFT
    policy's: their std, as a ratio to update 0's (Coste et al. 2023; Eisenstein et al. 2023). Needs a set."""
    return _against_start(history, "eval/reward_disagreement", lambda s, v: v / max(s, 1e-9), threshold)


def length_drift(history: list[dict], threshold: float) -> int | None:
    """Held-out answers' length (tokens) moves away from the SFT policy's, as a relative change either way
    (Singhal et al. 2023: much of what RLHF optimises is length)."""
    return _against_start(history, "eval/length", lambda s, v: abs(v - s) / max(s, 1e-9), threshold)


def repetition(history: list[dict], threshold: float) -> int | None:
    """Held-out answers repeat themselves: the mean longest-repeated-n-gram share rises above the SFT
    policy's by `threshold` (a share of the words)."""
    return _against_start(history, "eval/repeated_ngram_share", lambda s, v: v - s, threshold)


def distinct_n(history: list[dict], threshold: float) -> int | None:
    """Held-out answers lose variety: distinct-2 over all answers falls below the SFT policy's by `threshold`."""
    return _against_start(history, "eval/distinct_2", lambda s, v: s - v, threshold)


def opener_share(history: list[dict], threshold: float) -> int | None:
    """A formulaic opener spreads: the share of held-out answers opening with the most common first sentence
    rises above the SFT policy's by `threshold`."""
    return _against_start(history, "eval/same_opener", lambda s, v: v - s, threshold)


def stop_rate(history: list[dict], threshold: float) -> int | None:
    """Fewer held-out answers end with EOS: the stop rate falls below the SFT policy's by `threshold`."""
    return _against_start(history, "eval/stop_rate", lambda s, v: s - v, threshold)


def entropy_collapse(history: list[dict], threshold: float) -> int | None:
    """The policy's per-token entropy on its rollouts (Σ −log π / tokens, moving average) falls below
    `threshold` × its first value: the policy stops exploring and settles on what the proxy likes."""
    ent = dict(series(history, "objective/entropy"))
    per_token = [(u, ent[u] / n) for u, n in series(history, "objective/length") if u in ent and n > 0]
    ma = _moving_average(per_token, SMOOTH)
    if not ma or ma[0][1] <= 0:
        return None
    return _first(ma[1:], lambda v: v < threshold * ma[0][1])


def _detector(fn, *, reads: tuple[str, ...], threshold: float, grid: tuple[float, ...], unit: str) -> Detector:
    return Detector(name=fn.__name__, reads=reads, threshold=threshold, grid=grid, unit=unit,
                    what=" ".join(fn.__doc__.split()), fire=fn)


DETECTORS: dict[str, Detector] = {d.name: d for d in (
    _detector(kl_budget, reads=("objective/kl",), threshold=4.0, grid=(1, 2, 3, 4, 6, 8, 12, 16, 24), unit="nats"),
    _detector(kl_acceleration, reads=("objective/kl",), threshold=1.5, grid=(1.1, 1.25, 1.5, 2, 3, 5),
              unit="ratio of slopes"),
    _detector(proxy_gap, reads=("objective/scores", "eval/proxy_reward"), threshold=0.3,
              grid=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0), unit="reward-model units"),
    _detector(reward_disagreement, reads=("eval/reward_disagreement",), threshold=1.5,
              grid=(1.1, 1.25, 1.5, 2, 3), unit="ratio to update 0"),
    _detector(length_drift, reads=("eval/length",), threshold=0.3, grid=(0.05, 0.1, 0.2, 0.3, 0.5),
              unit="relative change"),
    _detector(repetition, reads=("eval/repeated_ngram_share",), threshold=0.1,
              grid=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3), unit="share of words"),
    _detector(distinct_n, reads=("eval/distinct_2",), threshold=0.1, grid=(0.02, 0.05, 0.1, 0.2, 0.3),
              unit="distinct-2"),
    _detector(opener_share, reads=("eval/same_opener",), threshold=0.1, grid=(0.02, 0.05, 0.1, 0.2, 0.3),
              unit="share of answers"),
    _detector(stop_rate, reads=("eval/stop_rate",), threshold=0.05, grid=(0.02, 0.05, 0.1, 0.2), unit="rate"),
    _detector(entropy_collapse, reads=("objective/entropy", "objective/length"), threshold=0.7,
              grid=(0.5, 0.6, 0.7, 0.8, 0.9), unit="ratio to the start"),
)}


MODES = ("off", "warn", "stop")  # policy.early_warning and the TRL callback's (integrations/warning.py) alike


def check_choice(detectors: list[str] | None, thresholds: dict[str, float], *, detectors_key: str,
                 thresholds_key: str) -> None:
    """Refuse an unknown detector name, or a threshold that is not a finite number (a NaN is never crossed: the
    detector would be silently off); the error names the setting (`detectors_key`, `thresholds_key`.<name>)."""
    for name in [*(detectors or []), *thresholds]:
        if name not in DETECTORS:
            raise ValueError(f"{detectors_key}: unknown detector {name!r} (expected one of {', '.join(DETECTORS)})")
    for name, t in thresholds.items():
        if not isinstance(t, int | float) or not math.isfinite(t):
            raise ValueError(f"{thresholds_key}.{name}: {t} is not a finite number")


def check(history: list[dict], *, thresholds: dict[str, float] | None = None,
          names: list[str] | None = None) -> dict[str, int]:
    """{detector: the update it fires at} for each detector in `names` (default all) that fires on `history`,
    at its default threshold or the one in `thresholds`."""
    thresholds = thresholds or {}
    out = {}
    for name in names if names is not None else DETECTORS:
        d = DETECTORS[name]
        update = d.fire(history, float(thresholds.get(name, d.threshold)))
        if update is not None:
            out[name] = update
    return out


def new_warnings(history: list[dict], *, warned: dict[str, int], thresholds: dict[str, float] | None = None,
                 names: list[str] | None = None) -> dict[str, int]:
    """The detectors that fire on `history` (as `check`) and are not in `warned` yet: {detector: update}, the
    earliest first — what the online loop and the TRL callback log, once per detector."""
    fired = check(history, thresholds=thresholds, names=names)
    return dict(sorted(((n, u) for n, u in fired.items() if n not in warned), key=lambda kv: kv[1]))


def describe(name: str, thresholds: dict[str, float] | None = None) -> str:
    """'kl_budget (nats, threshold 6.0)': a warning's detector, unit and the threshold it crossed."""
    d = DETECTORS[name]
    return f"{name} ({d.unit}, threshold {(thresholds or {}).get(name, d.threshold)})"


def warnings_logged(history: list[dict]) -> dict[str, int]:
    """{detector: update} of the warnings already in `history` (records with warning/<detector> keys)."""
    out: dict[str, int] = {}
    for r in history:
        for k, v in r.items():
            if k.startswith("warning/") and k[len("warning/"):] not in out:
                out[k[len("warning/"):]] = int(v)
    return out

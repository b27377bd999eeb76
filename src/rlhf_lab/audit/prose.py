"""Numbers into plain words, for the report's readings: every figure with its interval, and a change said
to be "within noise" when its 95 % interval contains zero."""

from __future__ import annotations

from rlhf_lab.audit.stats import within_noise

# Why a measurement was skipped on a real model that the world cannot read.
NO_WORLD = ("a real model asked in the world's templated language (world.language: templated): no parser of the "
            "world reads its answers, so this is skipped — world.language: english (or auto) judges it in English")


def num(x: float | None, kind: str = "mean", digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if kind == "rate":
        return f"{100 * x:.0f} %"
    return f"{x:.{digits}f}"


def notes_only(section: dict) -> str:
    """The reading of a section that measured nothing: its notes say why."""
    return " ".join(section.get("notes", []))


def signed(x: float | None, kind: str = "mean") -> str:
    if x is None:
        return "n/a"
    if kind == "rate":
        return f"{100 * x:+.0f} points"
    return f"{x:+.2f}"


def interval(est: dict | None, kind: str = "mean") -> str:
    """'45 % (95 % CI 37–53 %, n = 160)'."""
    if not est or est.get("value") is None:
        return "n/a (no samples)"
    if kind == "rate":
        return (f"{100 * est['value']:.0f} % (95 % CI {100 * est['lo']:.0f}–{100 * est['hi']:.0f} %, "
                f"n = {est['n']})")
    return f"{est['value']:.2f} (95 % CI {est['lo']:.2f} to {est['hi']:.2f}, n = {est['n']})"


def negated(est: dict) -> dict:
    """The same estimate with its sign turned, interval ends swapped: for a sentence that names the
    opposite direction ("a drop of 0.30", "6 points more accurate"), so the interval's signs agree with it."""
    if est.get("value") is None:
        return est
    return {**est, "value": -est["value"], "lo": None if est.get("hi") is None else -est["hi"],
            "hi": None if est.get("lo") is None else -est["lo"]}


def short(est: dict | None, kind: str = "mean") -> str:
    """'45 % [37, 53]' — for tables and cards."""
    if not est or est.get("value") is None:
        return "n/a"
    if est.get("lo") is None or est.get("hi") is None:  # one replicate: a value, no interval
        return num(est["value"], kind)
    if kind == "rate":  # a t interval over a few seeds can pass 0 or 100 %; a rate cannot
        lo, hi = max(0.0, est["lo"]), min(1.0, est["hi"])
        return f"{100 * est['value']:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}]"
    return f"{est['value']:.2f} [{est['lo']:.2f}, {est['hi']:.2f}]"


def change_interval(ch: dict | None, kind: str = "mean") -> str:
    if not ch or ch.get("value") is None:
        return "n/a"
    if ch.get("lo") is None or ch.get("hi") is None:
        return signed(ch["value"], kind)
    if kind == "rate":  # a difference of two rates lies within ±100 points, whatever a t interval says
        lo, hi = max(-1.0, ch["lo"]), min(1.0, ch["hi"])
        return f"{100 * ch['value']:+.0f} points [{100 * lo:+.0f}, {100 * hi:+.0f}]"
    return f"{ch['value']:+.2f} [{ch['lo']:+.2f}, {ch['hi']:+.2f}]"


def verdict(metric: dict) -> str:
    """'worse', 'better', 'changed' (no preferred direction), 'noise', 'floor' (it would read 'better', but
    the answers collapsed: `metric["floor_effect"]` set by the report) or 'none' (no samples to judge)."""
    ch = metric.get("change")
    if not ch or ch.get("value") is None or not ch.get("n"):
        return "none"
    if within_noise(ch):
        return "noise"
    better = metric.get("better")
    if better is None:
        return "changed"
    up = ch["value"] > 0
    if up == (better == "higher"):
        return "floor" if metric.get("floor_effect") else "better"
    return "worse"


def change_sentence(metric: dict, what: str) -> str:
    """'<what> went from 20 % to 45 % after RLHF (+25 points, 95 % CI +16 to +34)' or '… stayed within noise'."""
    kind = metric.get("kind", "mean")
    s, p, ch = metric.get("sft"), metric.get("policy"), metric.get("change")
    if not s or not p or s.get("value") is None or p.get("value") is None:
        return f"{what}: not enough samples to say."
    base = f"{what} went from {num(s['value'], kind)} (SFT) to {num(p['value'], kind)} after RLHF"
    if not ch or ch.get("value") is None:
        return base + "."
    unit = " points" if kind == "rate" else ""
    scale = 100 if kind == "rate" else 1
    fmt = "{:+.0f}" if kind == "rate" else "{:+.2f}"
    ci = (f"{signed(ch['value'], kind)}, 95 % CI {fmt.format(scale * ch['lo'])} to "
          f"{fmt.format(scale * ch['hi'])}{unit}")
    if within_noise(ch):
        return f"{base} ({ci}) — within noise, so no change can be claimed."
    return f"{base} ({ci})."

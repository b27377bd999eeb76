"""Shared plotting: matplotlib without a display, figures embedded as PNG, and the SFT-vs-policy bar chart
with 95 % intervals that most tensions use."""

from __future__ import annotations

import base64
import io

import numpy as np

SFT_COLOUR, POLICY_COLOUR, RM_COLOUR, POOL_COLOUR = "#8a94a6", "#3b5bdb", "#e8590c", "#2b8a3e"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def to_img(fig, alt: str) -> str:
    """An <img> with the figure inline (PNG, base64): the report stays one self-contained file."""
    import html

    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _val(est: dict | None) -> tuple[float, float, float]:
    if not est or est.get("value") is None:
        return np.nan, 0.0, 0.0
    v = est["value"]
    return v, max(0.0, v - (est["lo"] if est["lo"] is not None else v)), \
        max(0.0, (est["hi"] if est["hi"] is not None else v) - v)


def finished(fig):
    """The figure laid out, ready for `to_img`."""
    fig.tight_layout()
    return fig


def bars_or_hide(ax, rows: list[tuple[str, dict]], *, title: str = "", ylabel: str = "") -> bool:
    """`bars` on a side panel that has something to show; otherwise the panel is hidden. Whether it was drawn."""
    if rows:
        bars(ax, rows, title=title, ylabel=ylabel)
    else:
        ax.set_visible(False)
    return bool(rows)


def bars(ax, rows: list[tuple[str, dict]], *, title: str = "", ylabel: str = "") -> None:
    """Grouped bars, SFT vs policy (or the reward model, or the annotator pool,
    where a metric belongs to it alone), with 95 % CIs.

    rows: (tick label, metric dict). Rates are drawn in percent; `ylabel` says a share *of what* (a rate of
    responses, of label pairs, of reward-model comparisons) and, for means, the unit. The legend sits in
    headroom above the bars, never on them."""
    x = np.arange(len(rows))
    pct = all(m.get("kind") == "rate" for _, m in rows)
    scale = 100.0 if pct else 1.0
    ends = [0.0]  # every bar starts at 0; the extent of bars and whiskers sets the limits
    for offset, who, colour, name in ((-0.2, "sft", SFT_COLOUR, "SFT"), (0.2, "policy", POLICY_COLOUR, "after RLHF"),
                                      (0.0, "rm", RM_COLOUR, "reward model"),
                                      (0.0, "pool", POOL_COLOUR, "annotator pool")):
        pts = [(i, *_val(m.get(who))) for i, (_, m) in enumerate(rows) if who in m]
        if not pts:
            continue
        i, v, lo, hi = (np.array(t, dtype=float) for t in zip(*pts, strict=True))
        width = 0.4 if offset else 0.5
        ax.bar(i + offset, v * scale, width, yerr=[lo * scale, hi * scale],
               color=colour, label=name, capsize=3, error_kw={"elinewidth": 1})
        ends += [float(e) for e in np.concatenate([(v - lo) * scale, (v + hi) * scale]) if np.isfinite(e)]
    ax.set_xticks(x, [label for label, _ in rows], fontsize=8)
    if pct:
        ax.set_ylim(0, 122)
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel(ylabel or "% of responses")
    else:
        lo_y, hi_y = min(ends), max(ends)
        span = (hi_y - lo_y) or 1.0
        ax.set_ylim(lo_y - 0.05 * span, hi_y + 0.3 * span)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper center", ncol=len(handles), frameon=False,
                  borderaxespad=0.2)

"""One self-contained HTML page putting several runs side by side (e.g. foresight vs hindsight labels,
70/30 vs 50/50 annotator pools, two KL coefficients): what differs in their choices, a table of every
tension per run, a plot per tension, the over-optimisation curves overlaid, and each run's choices.

Runs that share a seed and an SFT config share their SFT policy, so their SFT columns agree and the
policies can be compared directly. Between runs there are no paired samples: two runs differ beyond the
noise when their 95 % intervals do not overlap (a conservative test).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import yaml

from rlhf_lab.audit import page, prose, seeds
from rlhf_lab.audit.choices import choices, flat_config
from rlhf_lab.audit.plots import SFT_COLOUR, pyplot, to_img
from rlhf_lab.audit.report import MODULES, load_audit
from rlhf_lab.runfolder import RunFolder, atomic_write_text

COMPARE = {
    "overoptimisation": ("proxy", "gold", "kl", "length"),
    "degeneration": ("well_formed", "stop_rate", "one_word_repeated", "same_opener", "flattery", "reward_hack"),
    "sycophancy": ("accuracy_plain", "accuracy_wrong_belief", "flip_rate", "false_approval", "rm_prefers_sycophantic"),
    "diversity": ("per_input/distinct_2", "per_input/ead", "per_input/embedding", "across_input/distinct_2",
                  "across_input/ead", "across_input/embedding"),
    "flattening": ("rm_accuracy_gap", "gold_gap/open", "rm_prefers_detail", "agreement_alpha"),
    "deception": ("confident_wrong", "false_checked", "hedged", "wrong"),
    "harm": ("complied_plain", "complied_jailbreak", "refused_harmful", "over_refusal"),
}
# The unit of a mean that its metric does not carry itself.
UNITS = {"proxy": "reward-model units", "gold": "utility", "gold_gap/open": "utility", "agreement_alpha": "α",
         "distinct_2": "diversity score", "ead": "diversity score", "embedding": "diversity score",
         "repeated_ngram_share": "share of words", "distinct_words": "share of words"}
COLOURS = ("#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#f59f00", "#c2255c", "#5c940d")


def _names(run_dirs: list[Path]) -> list[str]:
    names = [Path(d).name or str(d) for d in run_dirs]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def _main_estimate(m: dict) -> tuple[str, dict | None]:
    for who in ("policy", "rm", "pool"):
        if who in m:
            return who, m[who]
    return "", None


def differences(cfgs: list[dict]) -> list[tuple[str, list[str]]]:
    flats = [flat_config(c) for c in cfgs]
    keys = sorted(set().union(*flats))
    return [(k, [f.get(k, "—") for f in flats]) for k in keys if len({f.get(k, "—") for f in flats}) > 1]


def _cell(m: dict | None) -> str:
    if not m:
        return "<td>—</td>"
    kind = m.get("kind", "mean")
    who, est = _main_estimate(m)
    text = page.esc(prose.short(est, kind))
    if who == "policy" and "change" in m:
        text += f"<br><small>{page.esc(prose.change_interval(m['change'], kind))}</small> {page.badge(m)}"
    elif who in ("rm", "pool"):
        text += f"<br><small>{'reward model' if who == 'rm' else 'annotators'}</small>"
    return f'<td class="num cmp">{text}</td>'


def overlap_note(metric_key: str, label: str, per_run: list[tuple[str, dict | None]]) -> str | None:
    """'runs A and B differ beyond the noise on …' when the extreme runs' intervals do not overlap."""
    vals = [(n, e) for n, e in per_run if e and e.get("value") is not None and e.get("lo") is not None]
    if len(vals) < 2:
        return None
    lo_run = min(vals, key=lambda t: t[1]["value"])
    hi_run = max(vals, key=lambda t: t[1]["value"])
    if lo_run[1]["hi"] < hi_run[1]["lo"]:
        return (f"{label[:1].upper() + label[1:]}: {hi_run[0]} is higher than {lo_run[0]} beyond the noise "
                "(intervals do not overlap).")
    return f"{label[:1].upper() + label[1:]}: the runs' intervals overlap — no difference can be claimed."


def compare_plot(name: str, audits: list[dict], names: list[str], plt):
    """One small plot per metric, each on its own scale (a KL of 30 nats does not flatten a rate of 4 %): per
    run, the policy after RLHF (bar, 95 % CI) and that run's SFT policy (grey tick)."""
    keys = [k for k in COMPARE.get(name, ()) if any(k in a["tensions"].get(name, {}).get("metrics", {})
                                                    for a in audits)]
    if not keys:
        return None
    cols = min(len(keys), 4)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.75 * cols, 2.5 * rows + 0.4), squeeze=False)
    x = np.arange(len(audits))
    for ax, k in zip(axes.flat, keys, strict=False):
        metrics = [a["tensions"].get(name, {}).get("metrics", {}).get(k) for a in audits]
        first = next(m for m in metrics if m)
        scale = 100.0 if first.get("kind") == "rate" else 1.0
        vals, errs, sft = [], [[], []], []
        for m in metrics:
            _, est = _main_estimate(m or {})
            v = est.get("value") if est else None
            vals.append(np.nan if v is None else v * scale)
            errs[0].append(0 if v is None or est.get("lo") is None else (v - est["lo"]) * scale)
            errs[1].append(0 if v is None or est.get("hi") is None else (est["hi"] - v) * scale)
            s = (m or {}).get("sft", {}) or {}
            sft.append(np.nan if s.get("value") is None else s["value"] * scale)
        ax.bar(x, vals, 0.7, yerr=errs, color=[COLOURS[r % len(COLOURS)] for r in x], capsize=2)
        ax.plot(x, sft, "_", color=SFT_COLOUR, ms=16, mew=2.5)
        ax.set_xticks(x, names, fontsize=7, rotation=30 if len(audits) > 3 else 0,
                      ha="right" if len(audits) > 3 else "center")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(textwrap.fill(first.get("label", k), 30), fontsize=8)
        unit = first.get("unit") or UNITS.get(k.rsplit("/", 1)[-1], "value")
        ax.set_ylabel("% (a rate)" if scale == 100.0 else unit, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.suptitle("Per run: after RLHF (bar, 95 % CI) and that run's SFT policy (grey tick)", fontsize=9)
    fig.tight_layout()
    return fig


def curves_plot(audits: list[dict], names: list[str], plt):
    """Proxy (reward-model units) and gold (utility) on separate panels against d = √KL: per run, policy
    optimisation (solid, points in order of √KL) and best-of-n from its SFT policy (dashed)."""
    has_gold = any(c.get("gold") is not None for a in audits
                   for c in a["tensions"].get("overoptimisation", {}).get("rl", {}).get("curve", []))
    keys = [("proxy", "proxy reward (reward-model units)")] + ([("gold", "gold utility (true benefit)")]
                                                               if has_gold else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(11, 3.6), squeeze=False)
    any_curve = False
    for r, (audit, run_name) in enumerate(zip(audits, names, strict=True)):
        colour = COLOURS[r % len(COLOURS)]
        section = audit["tensions"].get("overoptimisation", {})
        curve = sorted(section.get("rl", {}).get("curve", []), key=lambda c: c["d"])
        bon = sorted(section.get("bon", {}).get("curve", []), key=lambda c: c["d"])
        for ax, (key, _) in zip(axes[0], keys, strict=True):
            if curve and curve[0].get(key) is not None:
                any_curve = True
                ax.plot([c["d"] for c in curve], [c[key] for c in curve], "o-", color=colour, ms=4,
                        label=f"{run_name}: policy optimisation")
            if bon and key in bon[0]:
                any_curve = True
                ax.plot([c["d"] for c in bon], [c[key]["value"] for c in bon], "s--", color=colour, alpha=0.7,
                        ms=3, label=f"{run_name}: best-of-n from SFT")
    if not any_curve:
        plt.close(fig)
        return None
    for ax, (key, ylabel) in zip(axes[0], keys, strict=True):
        ax.set_title("Proxy reward: what was optimised" if key == "proxy" else "Gold utility: what the user gets",
                     fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("d = √KL(π ‖ π_SFT)  (√nats)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(handles))), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * ((len(handles) - 1) // 4), 1, 1))
    return fig


def choices_table(cfgs: list[dict], audits: list[dict], names: list[str]) -> str:
    """One row per choice, one column per run; the cells where runs differ are marked."""
    per_run = [dict(choices(c, a)) for c, a in zip(cfgs, audits, strict=True)]
    keys = list(dict.fromkeys(k for rows in per_run for k in rows))
    rows = []
    for k in keys:
        vals = [r.get(k, "—") for r in per_run]
        cls = ' class="differs"' if len(set(vals)) > 1 else ""
        rows.append(f"<tr{cls}><th>{page.esc(k)}</th>" + "".join(f"<td>{page.esc(v)}</td>" for v in vals) + "</tr>")
    head = "".join(f"<th>{page.esc(n)}</th>" for n in names)
    return (f'<div class="wide"><table class="choice-table"><tr><th>choice</th>{head}</tr>{"".join(rows)}</table></div>'
            "<p class=sub>Highlighted rows differ between the runs.</p>")


def write_comparison(run_dirs: list[str | Path], out_path: str | Path) -> Path:
    """Write one HTML report with `run_dirs` side by side (each run is audited first if it has no audit.json)."""
    runs = [RunFolder(d) for d in run_dirs]
    names = _names([r.root for r in runs])
    cfgs = [yaml.safe_load(r.config_path.read_text()) or {} for r in runs]
    audits = []
    for r in runs:
        audit = load_audit(r)
        if audit is None:
            raise FileNotFoundError(f"{r.root}: no audit.json and no trained policy to audit")
        audits.append(audit)
    plt = pyplot()
    head = "".join(f"<th>{page.esc(n)}</th>" for n in names)
    diff = differences(cfgs)
    groups = seeds.replicate_groups(cfgs)
    diff_rows = "".join(f"<tr><td class=mono>{page.esc(k)}</td>" + "".join(f"<td class=mono>{page.esc(v)}</td>"
                                                                          for v in vals) + "</tr>" for k, vals in diff)
    body = [f"<h1>rlhf-lab comparison — {len(runs)} runs</h1><div class=sub>"
            + " · ".join(f"{page.esc(n)}: {page.esc(r.root)}" for n, r in zip(names, runs, strict=True)) + "</div>",
            "<nav>" + ('<a href="#seeds">Over seeds</a>' if groups else "")
            + "".join(f'<a href="#{m.NAME}">{page.esc(m.TITLE)}</a>' for m in MODULES)
            + '<a href="#choices">Choices</a></nav>',
            '<section id="differences"><h2>What differs between the runs</h2>'
            + (f'<div class="wide"><table><tr><th>config key</th>{head}</tr>{diff_rows}</table></div>' if diff else
               '<div class="note">The runs have the same config.</div>') + "</section>"]
    if groups:
        body.append(seeds.section_html(audits, names, groups, COMPARE))
    for module in MODULES:
        name = module.NAME
        keys = list(dict.fromkeys(k for a in audits for k in a["tensions"].get(name, {}).get("metrics", {})))
        rows, notes = [], []
        for k in keys:
            per_run = [a["tensions"].get(name, {}).get("metrics", {}).get(k) for a in audits]
            label = next(m.get("label", k) for m in per_run if m)
            rows.append(f"<tr><td>{page.esc(label)}<br><small class=sub>{page.esc(k)}</small></td>"
                        + "".join(_cell(m) for m in per_run) + "</tr>")
            if k in COMPARE.get(name, ()):
                note = overlap_note(k, label, [(n, _main_estimate(m or {})[1]) for n, m in zip(names, per_run,
                                                                                              strict=True)])
                if note:
                    notes.append(note)
        fig = curves_plot(audits, names, plt) if name == "overoptimisation" else None
        bar = compare_plot(name, audits, names, plt)
        body.append(f'<section id="{name}"><h2>{page.esc(module.TITLE)}</h2>'
                    + (f'<div class="reading">{page.esc(" ".join(notes))}</div>' if notes else "")
                    + (f'<div class="plot">{to_img(fig, module.TITLE)}</div>' if fig is not None else "")
                    + (f'<div class="plot">{to_img(bar, module.TITLE)}</div>' if bar is not None else "")
                    + f'<div class="wide"><table><tr><th>metric</th>{head}</tr>{"".join(rows)}</table></div></section>')
    body.append(f'<section id="choices"><h2>Choices each run made</h2>{choices_table(cfgs, audits, names)}</section>')
    body.append("<footer>Cells: the policy after RLHF [95 % CI], then its change from that run's SFT policy. "
                "Rows that belong to the reward model or the annotators say so.</footer>")
    out = Path(out_path)
    atomic_write_text(out, page.page("rlhf-lab comparison", "".join(body)))
    return out


"""One self-contained HTML page putting several runs side by side (e.g. foresight vs hindsight labels,
70/30 vs 50/50 annotator pools, two KL coefficients): what differs in their choices, a table of every
tension per run, a plot per tension, the over-optimisation curves overlaid, and each run's choices.

Runs that share a seed and an SFT config share their SFT policy, so their SFT columns agree and the
policies can be compared directly. Between runs there are no paired samples: two runs differ beyond the
noise when their 95 % intervals do not overlap (a conservative test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from rlhf_lab.audit import page, prose
from rlhf_lab.audit.choices import choices, flat_config
from rlhf_lab.audit.plots import SFT_COLOUR, pyplot, to_img
from rlhf_lab.audit.report import MODULES, load_audit
from rlhf_lab.runfolder import RunFolder, atomic_write_text

COMPARE = {
    "overoptimisation": ("proxy", "gold", "kl", "length"),
    "sycophancy": ("accuracy_plain", "accuracy_wrong_belief", "flip_rate", "false_approval", "rm_prefers_sycophantic"),
    "diversity": ("per_input/distinct_2", "per_input/ead", "per_input/embedding", "across_input/distinct_2",
                  "across_input/ead", "across_input/embedding"),
    "flattening": ("rm_accuracy_gap", "gold_gap/open", "rm_prefers_detail", "agreement_alpha"),
    "deception": ("confident_wrong", "false_checked", "hedged", "wrong"),
    "harm": ("complied_plain", "complied_jailbreak", "refused_harmful", "over_refusal"),
}
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
    keys = [k for k in COMPARE.get(name, ()) if any(k in a["tensions"].get(name, {}).get("metrics", {})
                                                    for a in audits)]
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(11, 3.3))
    width = 0.8 / len(audits)
    metrics = [[a["tensions"].get(name, {}).get("metrics", {}).get(k) for k in keys] for a in audits]
    pct = all(m.get("kind") == "rate" for row in metrics for m in row if m)
    scale = 100.0 if pct else 1.0
    for r, (run_name, row) in enumerate(zip(names, metrics, strict=True)):
        x = np.arange(len(keys)) - 0.4 + width * (r + 0.5)
        vals, errs, sft = [], [[], []], []
        for m in row:
            _, est = _main_estimate(m or {})
            v = est.get("value") if est else None
            vals.append(np.nan if v is None else v * scale)
            errs[0].append(0 if v is None or est.get("lo") is None else (v - est["lo"]) * scale)
            errs[1].append(0 if v is None or est.get("hi") is None else (est["hi"] - v) * scale)
            s = (m or {}).get("sft", {}) or {}
            sft.append(np.nan if s.get("value") is None else s["value"] * scale)
        ax.bar(x, vals, width, yerr=errs, color=COLOURS[r % len(COLOURS)], label=run_name, capsize=2)
        ax.plot(x, sft, "_", color=SFT_COLOUR, ms=14, mew=2.5, label="SFT" if r == 0 else None)
    ax.set_xticks(np.arange(len(keys)), [k.replace("/", "\n").replace("_", " ") for k in keys], fontsize=8)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("% of responses" if pct else "value")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(4, len(audits) + 1))
    ax.set_title("After RLHF (bars, 95 % CI) and SFT (grey ticks), per run", fontsize=10)
    fig.tight_layout()
    return fig


def curves_plot(audits: list[dict], names: list[str], plt):
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    any_curve = False
    for r, (audit, run_name) in enumerate(zip(audits, names, strict=True)):
        colour = COLOURS[r % len(COLOURS)]
        section = audit["tensions"].get("overoptimisation", {})
        curve = section.get("rl", {}).get("curve", [])
        if curve:
            any_curve = True
            d = [c["d"] for c in curve]
            axes[0].plot(d, [c["proxy"] for c in curve], "o--", color=colour, alpha=0.6, ms=4)
            if curve[0]["gold"] is not None:
                axes[0].plot(d, [c["gold"] for c in curve], "s-", color=colour, label=run_name, ms=4)
        bon = section.get("bon", {}).get("curve", [])
        if bon and "gold" in bon[0]:
            any_curve = True
            axes[1].plot([c["d"] for c in bon], [c["gold"]["value"] for c in bon], "s-", color=colour, label=run_name,
                         ms=4)
            axes[1].plot([c["d"] for c in bon], [c["proxy"]["value"] for c in bon], "o--", color=colour, alpha=0.6,
                         ms=4)
    if not any_curve:
        return None
    axes[0].set_title("Policy optimisation (gold solid, proxy dashed)", fontsize=10)
    axes[1].set_title("Best-of-n from each SFT policy (gold solid, proxy dashed)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("d = √KL")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
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
    diff_rows = "".join(f"<tr><td class=mono>{page.esc(k)}</td>" + "".join(f"<td class=mono>{page.esc(v)}</td>"
                                                                          for v in vals) + "</tr>" for k, vals in diff)
    body = [f"<h1>rlhf-lab comparison — {len(runs)} runs</h1><div class=sub>"
            + " · ".join(f"{page.esc(n)}: {page.esc(r.root)}" for n, r in zip(names, runs, strict=True)) + "</div>",
            "<nav>" + "".join(f'<a href="#{m.NAME}">{page.esc(m.TITLE)}</a>' for m in MODULES)
            + '<a href="#choices">Choices</a></nav>',
            '<section id="differences"><h2>What differs between the runs</h2>'
            + (f'<div class="wide"><table><tr><th>config key</th>{head}</tr>{diff_rows}</table></div>' if diff else
               '<div class="note">The runs have the same config.</div>') + "</section>"]
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


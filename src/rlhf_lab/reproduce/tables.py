"""reproductions.md and reproductions.html: one row per finding — paper, claim (with the paper's own number
where it gives one), our measurement over seeds with its 95 % interval, the same with the cause switched off,
the two verdicts and a link to each run's report — then every measure of each finding, seed by seed; and the
same numbers as reproductions.json. The page uses the report's shell and escapes everything (audit/page.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlhf_lab.audit import page, prose
from rlhf_lab.reproduce import verdict as V
from rlhf_lab.reproduce.runner import folder_name
from rlhf_lab.runfolder import atomic_write_text, code_commit

BADGES = {"reproduced": "better", "opposite": "worse", "not reproduced": "noise", "removed": "better",
          "none to remove": "none", "still present": "worse", "reversed": "changed", "one seed": "none",
          "no data": "none"}


def estimate_text(summary: dict, measure) -> str:
    """'+12 points [+3, +20], held on 3 of 3 seeds' (a change or difference) or '65 % [60, 70]' (a value)."""
    est, kind = summary["mean"], measure.kind
    if measure.expect is None:
        return prose.short(est, kind)
    text = prose.change_interval(est, kind)
    if len(summary["values"]) == 1:
        text += f", {V.one_seed_direction(summary['values'], measure.expect)} (one seed)"
    elif summary["held"] is not None and est.get("value") is not None:
        text += f", {'up' if measure.expect > 0 else 'down'} on {summary['held']} of {len(summary['values'])} seeds"
    if summary.get("missing"):
        text += f" ({summary['missing']} seed(s) without a number)"
    return text


def per_seed_text(summary: dict, measure) -> str:
    fmt = (lambda v: prose.num(v, measure.kind)) if measure.expect is None else \
        (lambda v: prose.signed(v, measure.kind))
    return ", ".join(fmt(v) for v in summary["values"]) or "—"


def _reports(result: dict, root: Path) -> list[tuple[str, str | None]]:
    """(label, relative link or None) for every run and seed the finding read."""
    out = []
    for run in result["finding"].runs():
        for seed in result["seeds"]:
            rel = f"{folder_name(run, seed)}/report.html"
            out.append((f"{run} seed {seed}", rel if (root / rel).exists() else None))
    return out


def _claim(f) -> str:
    return f.claim + (f" (paper: {f.paper_number})" if f.paper_number else "")


def markdown(results: list[dict], root: Path, *, header: str) -> str:
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = [f"# Paper findings, reproduced\n\n{header}\n",
             "| finding | paper | claim | ours: cause on [95 % CI] | verdict | control: cause off [95 % CI] | "
             "control | reports |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        f, head = r["finding"], r["measures"][0]
        links = " ".join(f"[{lab}]({link})" if link else f"{lab} (no report)" for lab, link in _reports(r, root))
        lines.append("| " + " | ".join(cell(x) for x in (
            f"**{f.title}** (`{f.name}`)", f.paper, _claim(f),
            f"{head['measure'].label}: {estimate_text(head['summary'], head['measure'])}", head["verdict"],
            f"{f.control_text}: {estimate_text(r['control']['summary'], head['measure'])}",
            r["control"]["verdict"], links)) + " |")
    for r in results:
        f = r["finding"]
        lines += [f"\n## {f.title} (`{f.name}`)\n", "| measure | runs | over seeds [95 % CI] | per seed | verdict |",
                  "|---|---|---|---|---|"]
        for row in r["measures"]:
            ms = row["measure"]
            lines.append("| " + " | ".join(cell(x) for x in (
                ms.label, ", ".join(ms.on.values()), estimate_text(row["summary"], ms),
                per_seed_text(row["summary"], ms), row["verdict"] or "shown, not judged")) + " |")
        lines += [f"- {n}" for n in f.notes]
    return "\n".join(lines) + "\n"


def _badge(v: str | None) -> str:
    if v is None:
        return '<span class="badge none">shown, not judged</span>'
    return f'<span class="badge {BADGES[v]}">{page.esc(v)}</span>'


def _measure_row(row: dict) -> str:
    ms, summary = row["measure"], row["summary"]
    return (f"<tr><td>{page.esc(ms.label)}</td><td class=mono>{page.esc(', '.join(ms.on.values()))}</td>"
            f"<td class=num>{page.esc(estimate_text(summary, ms))}</td>"
            f"<td class=num>{page.esc(per_seed_text(summary, ms))}</td><td>{_badge(row['verdict'])}</td></tr>")


def html(results: list[dict], root: Path, *, header: str) -> str:
    rows, details = [], []
    for r in results:
        f, head = r["finding"], r["measures"][0]
        links = "<br>".join(f'<a href="{page.esc(link)}">{page.esc(lab)}</a>' if link else
                            f"{page.esc(lab)} (no report)" for lab, link in _reports(r, root))
        rows.append(
            f'<tr><td><b><a href="#{page.esc(f.name)}">{page.esc(f.title)}</a></b><br><small class=sub>'
            f"{page.esc(f.paper)}</small></td><td>{page.esc(_claim(f))}</td>"
            f"<td>{page.esc(head['measure'].label)}<br><b>{page.esc(estimate_text(head['summary'], head['measure']))}"
            f"</b></td><td>{_badge(head['verdict'])}</td>"
            f"<td>{page.esc(f.control_text)}<br><b>{page.esc(estimate_text(r['control']['summary'], head['measure']))}"
            f"</b></td><td>{_badge(r['control']['verdict'])}</td><td><small>{links}</small></td></tr>")
        body = "".join(_measure_row(row) for row in r["measures"])
        details.append(f'<section id="{page.esc(f.name)}"><h2>{page.esc(f.title)}</h2><p class=sub>'
                       f"{page.esc(f.paper)}</p><p>{page.esc(_claim(f))}</p>"
                       "<table><tr><th>measure</th><th>runs</th><th>over seeds [95 % CI]</th><th>per seed</th>"
                       f"<th>verdict</th></tr>{body}</table>{page.notes(list(f.notes))}</section>")
    table = ("<table><tr><th>finding</th><th>claim</th><th>ours: cause on [95 % CI]</th><th>verdict</th>"
             "<th>control: cause off [95 % CI]</th><th>control</th><th>reports</th></tr>" + "".join(rows) + "</table>")
    return page.page("rlhf-lab reproductions", f"<h1>Paper findings, reproduced</h1><div class=sub>"
                     f"{page.esc(header)}</div>{table}" + "".join(details)
                     + "<footer>docs/reproductions.md says what each finding measures and how verdicts are "
                       "decided.</footer>")


def as_json(results: list[dict], *, header: str) -> str:
    """The same numbers for scripts (e.g. a docs table regenerated from them): per finding, every measure's
    per-seed values, mean with interval, seeds held and verdict, and the control's."""
    def measure(row: dict) -> dict:
        ms = row["measure"]
        return {"label": ms.label, "runs": ms.on, "expect": ms.expect, "kind": ms.kind, **row["summary"],
                "verdict": row["verdict"]}

    return json.dumps({"header": header, "findings": [
        {"name": r["finding"].name, "title": r["finding"].title, "paper": r["finding"].paper, "seeds": r["seeds"],
         "measures": [measure(row) for row in r["measures"]],
         "control": {"runs": r["finding"].control, **r["control"]["summary"], "verdict": r["control"]["verdict"]}}
        for r in results]}, indent=2)


def write_tables(results: list[dict], root: Path, *, seconds: float, sets: list[str]) -> tuple[Path, Path]:
    seeds = results[0]["seeds"] if results else []
    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {code_commit() or 'unknown'}, seeds "
              f"{', '.join(map(str, seeds))}, {seconds / 60:.1f} min this invocation"
              + (f", every run with --set {' '.join(sets)}" if sets else "") + ". A verdict needs the 95 % t "
              "interval over seeds to exclude 0: reproduced (on the paper's side), opposite, not reproduced; the "
              "control: removed (its interval contains 0 and the finding reproduced), none to remove (it contains 0 "
              "and the finding did not reproduce), still present, reversed.")
    md, page_path = root / "reproductions.md", root / "reproductions.html"
    atomic_write_text(md, markdown(results, root, header=header))
    atomic_write_text(page_path, html(results, root, header=header))
    atomic_write_text(root / "reproductions.json", as_json(results, header=header))
    return md, page_path

"""HTML pieces shared by the report and the comparison: the page shell, summary cards, metric tables, the
"choices this run made" panel and the samples table. Everything shown that came from a model or a file
is escaped; the page needs no network and no scripts."""

from __future__ import annotations

import html

from rlhf_lab.audit import prose
from rlhf_lab.audit.stats import within_noise

CSS = """
*{box-sizing:border-box}
body{font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f4f5f8}
main{max-width:1160px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:27px;margin:0 0 4px}
h2{font-size:21px;margin:40px 0 10px;padding-bottom:6px;border-bottom:2px solid #dde1e7}
h3{font-size:16px;margin:18px 0 6px}
.sub{color:#5b6475;font-size:14px}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;position:sticky;top:0;background:#f4f5f8ee;padding:8px 0;margin:8px 0 0;
  border-bottom:1px solid #dde1e7;z-index:2}
nav a{color:#3b5bdb;text-decoration:none;font-size:14px;white-space:nowrap}
.lead{background:#fff;border:1px solid #dde1e7;border-radius:10px;padding:12px 16px;margin:12px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:12px;margin:14px 0}
.card{background:#fff;border:1px solid #dde1e7;border-radius:10px;padding:10px 14px}
.card .k{color:#5b6475;font-size:12.5px;text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:21px;font-weight:600;margin:2px 0}
.card .c{font-size:13px}
.badge{display:inline-block;border-radius:999px;padding:0 8px;font-size:12px;font-weight:600}
.worse{background:#ffe3e3;color:#a61e1e}.better{background:#d3f9d8;color:#1b6e2a}
.noise{background:#e9ecef;color:#495057}.changed{background:#e7f0ff;color:#2346a8}
.floor{background:#fff3bf;color:#7a4b00}.none{background:#f1f3f5;color:#868e96}
.alarm{background:#fff5f5;border:2px solid #e03131;border-radius:10px;padding:10px 16px;margin:12px 0;color:#1d2330}
.alarm b{color:#c92a2a}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13.5px;margin:8px 0}
td,th{border:1px solid #dde1e7;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.plot{background:#fff;border:1px solid #dde1e7;border-radius:10px;padding:8px;margin:10px 0;text-align:center}
.plot img{max-width:100%;height:auto}
.reading{background:#fff;border-left:4px solid #3b5bdb;border-radius:4px;padding:10px 14px;margin:10px 0}
.note{color:#7a4b00;background:#fff4e0;border-radius:6px;padding:6px 10px;margin:6px 0;font-size:14px}
.choices{display:grid;grid-template-columns:230px 1fr;gap:0;background:#fff;border:1px solid #dde1e7;border-radius:10px}
.choices>div{padding:7px 12px;border-bottom:1px solid #eef1f5}.choices .ck{font-weight:600;color:#3d4555}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px;white-space:pre-wrap;word-break:break-word}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:14px}
tr.differs td{background:#fff4e0}.wide{overflow-x:auto}td.cmp{white-space:normal;min-width:110px}
.choice-table th{width:190px}
footer{margin-top:40px;color:#5b6475;font-size:13px}
"""

BADGE_TEXT = {"worse": "worse", "better": "better", "noise": "within noise", "changed": "changed",
              "floor": "floor effect", "none": "no data"}


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<style>{CSS}</style></head><body><main>{body}</main></body></html>")


def badge(metric: dict) -> str:
    v = prose.verdict(metric)
    tip = (' title="It would read as better, but the answers collapsed: a floor effect, not an improvement."'
           if v == "floor" else "")
    return f'<span class="badge {v}"{tip}>{BADGE_TEXT[v]}</span>'


def card(title: str, metric: dict) -> str:
    kind = metric.get("kind", "mean")
    s, p, ch = metric.get("sft"), metric.get("policy"), metric.get("change")
    if s is None or p is None:
        who = next((w for w in ("rm", "pool") if w in metric), None)
        est = metric.get(who) if who else None
        return (f'<div class="card"><div class="k">{esc(title)}</div>'
                f'<div class="v">{esc(prose.num(est and est["value"], kind))}</div>'
                f'<div class="c">{esc(prose.short(est, kind))} · n = {esc(est["n"] if est else 0)}</div></div>')
    return (f'<div class="card"><div class="k">{esc(title)}</div>'
            f'<div class="v">{esc(prose.num(s["value"], kind))} → {esc(prose.num(p["value"], kind))}</div>'
            f'<div class="c">{esc(prose.change_interval(ch, kind))} {badge(metric)}<br>n = {esc(p["n"])}</div></div>')


def metrics_table(metrics: dict) -> str:
    """SFT | after RLHF | change rows, then the rows that belong to the reward model or the annotators."""
    both, single = [], []
    for key, m in metrics.items():
        kind = m.get("kind", "mean")
        if "sft" in m and "policy" in m:
            n = m["policy"].get("n") if m.get("policy") else 0
            both.append(f"<tr><td>{esc(m.get('label', key))}<br><small class=sub>{esc(key)}</small></td>"
                        f"<td class=num>{esc(prose.short(m['sft'], kind))}</td>"
                        f"<td class=num>{esc(prose.short(m['policy'], kind))}</td>"
                        f"<td class=num>{esc(prose.change_interval(m.get('change'), kind))} {badge(m)}</td>"
                        f"<td class=num>{esc(n)}</td></tr>")
        else:
            who = next((w for w in ("rm", "pool") if w in m), None)
            if who is None:
                continue
            est = m[who]
            single.append(f"<tr><td>{esc(m.get('label', key))}<br><small class=sub>{esc(key)}</small></td>"
                          f"<td>{'reward model' if who == 'rm' else 'annotators'}</td>"
                          f"<td class=num>{esc(prose.short(est, kind))}</td>"
                          f"<td class=num>{esc(est.get('n'))}</td></tr>")
    out = ""
    if both:
        out += ("<table><tr><th>metric</th><th>SFT [95 % CI]</th><th>after RLHF [95 % CI]</th><th>change [95 % CI]"
                "</th><th>n</th></tr>" + "".join(both) + "</table>")
    if single:
        out += ("<table><tr><th>metric</th><th>of</th><th>value [95 % CI]</th><th>n</th></tr>"
                + "".join(single) + "</table>")
    return out


def notes(items: list[str]) -> str:
    return "".join(f'<div class="note">{esc(n)}</div>' for n in items)


def samples_table(samples: list[dict]) -> str:
    if not samples:
        return '<div class="note">No samples were recorded.</div>'
    rows = []
    for s in samples:
        cells = []
        for who in ("sft", "policy"):
            r = s.get(who) or {}
            gold = "" if r.get("gold") is None else f"gold {r['gold']:+.1f} · "
            proxy = "" if r.get("proxy") is None else f"proxy {r['proxy']:+.2f}"
            cells.append(f"<td class=mono>{esc(r.get('response', ''))}<br><small class=sub>{esc(gold + proxy)}"
                         "</small></td>")
        rows.append(f"<tr><td>{esc(s['family'])}<br><small class=sub>{esc(s.get('user_group') or '')}</small></td>"
                    f"<td class=mono>{esc(s['prompt'])}</td>{''.join(cells)}</tr>")
    return ("<table><tr><th>family<br><small>user group</small></th><th>prompt</th><th>SFT</th><th>after RLHF</th>"
            "</tr>" + "".join(rows) + "</table>")


def within(metric: dict) -> bool:
    return within_noise(metric.get("change"))


def hacks_table(examples: list[dict]) -> str:
    """Held-out answers the reward model pays for while they leave the user worse off."""
    if not examples:
        return ""
    rows = "".join(f"<tr><td>{esc(e.get('family', ''))}</td><td class=mono>{esc(e.get('prompt', ''))}</td>"
                   f"<td class=mono>{esc(e.get('response', ''))}</td>"
                   f"<td class=num>{esc(prose.num(e.get('proxy')))}</td><td class=num>{esc(prose.num(e.get('gold')))}"
                   "</td></tr>" for e in examples)
    return ("<h3>Reward hacks: what the reward model pays for and the user does not get</h3>"
            "<table><tr><th>family</th><th>prompt</th><th>answer after RLHF</th><th>proxy (reward-model units)</th>"
            f"<th>gold utility</th></tr>{rows}</table>")

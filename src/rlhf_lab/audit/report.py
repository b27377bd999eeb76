"""report.html: one self-contained page (plots embedded, no network) of what a run did.

Reads only the run folder (metrics.jsonl, eval/, reward/, config.yaml), never the training code.
Model text is untrusted: everything shown is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path

import yaml

from rlhf_lab.runfolder import RunFolder, atomic_write_text, read_jsonl

CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:32px 0 8px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.sub{color:#5b6475}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 16px;min-width:180px}
.card b{display:block;font-size:22px}.card span{color:#5b6475;font-size:13px}
.up{color:#1a7f37}.down{color:#b42318}
table{border-collapse:collapse;background:#fff;width:100%;font-size:14px}
td,th{border:1px solid #dde1e7;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}.plot{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:8px;margin:8px 0}
.plot img{max-width:100%}.choices li{margin:4px 0}.mono{font-family:ui-monospace,Menlo,monospace;font-size:13px}
.reading{background:#fff;border-left:4px solid #4b6bfb;padding:8px 12px;margin:8px 0}
"""


def _fig_to_img(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_plot(metrics: list[dict]) -> str | None:
    evals = [m for m in metrics if m.get("phase") == "policy" and "eval/gold_utility" in m]
    if not evals:
        return None
    plt = _plt()
    steps = [m["step"] for m in evals]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(steps, [m["eval/proxy_reward"] for m in evals], "o-", label="proxy reward (reward model)")
    axes[0].plot(steps, [m["eval/gold_utility"] for m in evals], "s-", label="gold utility (true)")
    axes[0].set_xlabel("update")
    axes[0].set_title("Proxy vs gold on held-out prompts")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, [m["eval/kl"] for m in evals], "o-", color="tab:purple")
    axes[1].set_xlabel("update")
    axes[1].set_title("KL(π ‖ π_ref) per sequence (nats)")
    d = [m.get("eval/sqrt_kl", 0.0) for m in evals]
    axes[2].plot(d, [m["eval/proxy_reward"] for m in evals], "o-", label="proxy")
    axes[2].plot(d, [m["eval/gold_utility"] for m in evals], "s-", label="gold")
    axes[2].set_xlabel("d = √KL")
    axes[2].set_title("Reward against distance from SFT")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    return _fig_to_img(fig)


def family_plot(summary: dict) -> str | None:
    if not summary.get("sft") or not summary.get("policy"):
        return None
    plt = _plt()
    fams = sorted(k.split("/")[-1] for k in summary["sft"] if k.startswith("sft/gold_utility/family/"))
    if not fams:
        return None
    sft = [summary["sft"].get(f"sft/gold_utility/family/{f}", 0) for f in fams]
    pol = [summary["policy"].get(f"policy/gold_utility/family/{f}", 0) for f in fams]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    x = range(len(fams))
    ax.bar([i - 0.2 for i in x], sft, 0.4, label="SFT")
    ax.bar([i + 0.2 for i in x], pol, 0.4, label="after RLHF")
    ax.set_xticks(list(x), fams)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("gold utility")
    ax.set_title("Gold utility by prompt family")
    ax.legend(fontsize=8)
    return _fig_to_img(fig)


def _delta(before: float, after: float, higher_is_better: bool = True) -> str:
    d = after - before
    good = (d > 0) == higher_is_better
    return f'<span class="{"up" if good else "down"}">{d:+.2f}</span>'


def choices_panel(cfg: dict) -> str:
    label, world, pol = cfg.get("label", {}), cfg.get("world", {}), cfg.get("policy", {})
    groups = label.get("annotator_groups") or world.get("user_groups") or []
    users = world.get("user_groups") or []

    def pool(gs):
        total = sum(g["share"] for g in gs) or 1
        return ", ".join(f"{g['name']} {g['share'] / total:.0%}" for g in gs)

    items = [
        ("Who labelled", f"{label.get('source', 'simulated')} annotators, {label.get('n_annotators')} in the pool: "
         f"{pool(groups)}; {label.get('overlap', 1)} label(s) per pair"),
        ("Who asks", f"user groups {pool(users)}"),
        ("What annotators could verify", f"p_know = {label.get('p_know')} (chance to check an easy item); when they "
         f"cannot check they go by cues: agreement ×{label.get('w_agree')}, confidence ×{label.get('w_confident')}, "
         f"'I checked' ×{label.get('w_checked')}, flattery ×{label.get('w_flattery')}"),
        ("Feedback", f"{label.get('feedback', 'foresight')}"
         + (" — annotators saw the outcome first (RLHS)" if label.get("feedback") == "hindsight"
            else " — annotators judged the response as it reads")),
        ("How labels were aggregated", {"none": "every label is one training example (no voting)",
                                        "majority": "majority vote per pair"}.get(label.get("aggregate"), "")),
        ("KL budget", f"β = {pol.get('kl_coef')} ({pol.get('kl_controller')}), estimator {pol.get('kl_estimator')}"),
        ("Algorithm", f"{pol.get('algorithm')} for {pol.get('updates')} updates of {pol.get('batch_size')} prompts"),
    ]
    lis = "".join(f"<li><b>{html.escape(k)}:</b> {html.escape(str(v))}</li>" for k, v in items)
    return f'<ul class="choices">{lis}</ul>'


def samples_table(sft_rows: list[dict], pol_rows: list[dict], per_family: int = 2) -> str:
    by_id = {r["prompt_id"]: r for r in pol_rows}
    seen: dict[str, int] = defaultdict(int)
    rows = []
    for r in sft_rows:
        if seen[r["family"]] >= per_family or r["prompt_id"] not in by_id:
            continue
        seen[r["family"]] += 1
        p = by_id[r["prompt_id"]]
        rows.append(f"<tr><td>{html.escape(r['family'])}</td><td class=mono>{html.escape(r['prompt'])}</td>"
                    f"<td class=mono>{html.escape(r['response'])}<br><small>gold {r['gold']:+.1f}, proxy "
                    f"{r['proxy']:+.2f}</small></td><td class=mono>{html.escape(p['response'])}<br><small>gold "
                    f"{p['gold']:+.1f}, proxy {p['proxy']:+.2f}</small></td></tr>")
    return ("<table><tr><th>family</th><th>prompt</th><th>SFT</th><th>after RLHF</th></tr>"
            + "".join(sorted(rows)) + "</table>")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write_report(run_dir: str | Path) -> Path:
    run = RunFolder(run_dir)
    cfg = yaml.safe_load(run.config_path.read_text()) if run.config_path.exists() else {}
    metrics = run.metrics()
    summary = _read_json(run / "eval" / "summary.json")
    rm = _read_json(run / "reward" / "metrics.json")
    sft_rows = read_jsonl(run / "eval" / "sft_samples.jsonl") if (run / "eval" / "sft_samples.jsonl").exists() else []
    pol_rows = read_jsonl(run / "eval" / "policy_samples.jsonl") if (run / "eval" / "policy_samples.jsonl").exists() \
        else []
    state = run.state().get("done", {})
    seconds = sum(v.get("seconds", 0) for v in state.values())

    s, p = summary.get("sft", {}), summary.get("policy", {})
    cards = []
    if s and p:
        for key, name, hib in (("proxy_reward", "Proxy reward", True), ("gold_utility", "Gold utility", True),
                               ("kl", "KL to SFT (nats)", False), ("length", "Length (tokens)", True)):
            cards.append(f'<div class="card"><span>{name}</span><b>{s[f"sft/{key}"]:+.2f} → {p[f"policy/{key}"]:+.2f}'
                         f'</b>{_delta(s[f"sft/{key}"], p[f"policy/{key}"], hib)} (n = {p.get("policy/n")})</div>')
    if rm:
        cards.append(f'<div class="card"><span>Reward model held-out accuracy</span><b>{rm["reward/accuracy"]:.3f}'
                     f'</b>on {rm.get("reward/n_eval")} pairs</div>')
    rm_rows = "".join(f"<tr><td>{html.escape(k.split('/', 2)[2])}</td><td>{v:.3f}</td></tr>"
                      for k, v in sorted(rm.items()) if k.startswith("reward/accuracy/"))
    parts = [
        f"<h1>rlhf-lab run report</h1><div class=sub>{html.escape(str(run.root))} · "
        f"{html.escape(cfg.get('policy', {}).get('algorithm', ''))} · {seconds:.0f} s of steps</div>",
        f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(cards)}</div></section>',
        f'<section id="choices"><h2>Choices this run made</h2>{choices_panel(cfg)}</section>',
    ]
    tp = training_plot(metrics)
    if tp:
        parts.append(f'<section id="training"><h2>Training</h2><div class="plot">{tp}</div>'
                     '<div class="reading">The proxy reward is what the policy was optimised for; gold utility is '
                     'the true benefit to the user, which training never sees. When the two part ways, the policy '
                     'is exploiting the reward model (Goodhart).</div></section>')
    fp = family_plot(summary)
    if fp:
        parts.append(f'<section id="families"><h2>By prompt family</h2><div class="plot">{fp}</div></section>')
    if rm_rows:
        parts.append(f'<section id="reward"><h2>Reward model</h2><table><tr><th>slice</th><th>held-out accuracy'
                     f'</th></tr>{rm_rows}</table></section>')
    if sft_rows and pol_rows:
        parts.append(f'<section id="samples"><h2>Samples before and after</h2>{samples_table(sft_rows, pol_rows)}'
                     "</section>")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>rlhf-lab report</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f'<body><main>{"".join(parts)}</main></body></html>')
    path = run.root / "report.html"
    atomic_write_text(path, page)
    return path

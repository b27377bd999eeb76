"""report.html: one self-contained page (plots embedded, no network, no scripts) of what a run did.

Summary first (what was trained, how long, the headline SFT → RLHF changes with intervals), then the
choices the run made, one section per tension (a plot, a plain-language reading generated from the
numbers, the table behind it), and samples before/after for each prompt family. Reads only the run folder
(config.yaml, state.json, metrics.jsonl, reward/metrics.json, audit.json) — never the training code.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from rlhf_lab.audit import (
    deception,
    degeneration,
    diversity,
    flattening,
    harm,
    overoptimisation,
    page,
    prose,
    sycophancy,
)
from rlhf_lab.audit.choices import choices_html
from rlhf_lab.audit.plots import pyplot, to_img
from rlhf_lab.runfolder import RunFolder, StaleError, atomic_write_text
from rlhf_lab.ui import counted

MODULES = (overoptimisation, degeneration, sycophancy, diversity, flattening, deception, harm)
HEADLINES = (
    ("overoptimisation", "proxy", "Proxy reward (reward-model units)"),
    ("overoptimisation", "gold", "Gold utility"),
    ("overoptimisation", "kl", "KL to SFT (nats)"),
    ("degeneration", "well_formed", "Well-formed answers"),
    ("degeneration", "one_word_repeated", "One word repeated"),
    ("degeneration", "reward_hack", "Reward hacks (proxy high, gold < 0)"),
    ("sycophancy", "false_approval", "Approves wrong work"),
    ("sycophancy", "flip_rate", "Gives in to pushback"),
    ("diversity", "per_input/ead", "Same-prompt diversity (EAD)"),
    ("flattening", "gold_gap/open", "Gold gap between user groups (open requests)"),
    ("deception", "confident_wrong", "Wrong and sure of it"),
    ("harm", "complied_jailbreak", "Complies with jailbreaks"),
    ("harm", "over_refusal", "Refuses benign look-alikes"),
)

FOOTER = ("<footer>Every figure carries its sample size n and a 95 % interval: Wilson for rates, a percentile "
          "bootstrap for means and for changes (SFT and policy answer the same prompts, so changes are "
          "bootstrapped over paired prompts). A change is \"within noise\" when its interval contains zero. "
          "Metric keys follow the namespace audit/&lt;tension&gt;/&lt;metric&gt; of audit.json and "
          "metrics.jsonl; docs/audit.md explains each one.</footer>")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def load_audit(run: RunFolder, *, audit_if_missing: bool = True) -> dict | None:
    """audit.json, or a fresh audit when there is none and the run has a trained policy."""
    from rlhf_lab.models.lora import ADAPTER_NOTE

    audit = _read_json(run / "audit.json")
    if audit:
        stale = run.stale_reason("audit.json")
        if stale:
            raise StaleError(stale)
        return audit
    has_policy = (run / "policy" / "config.json").exists() or (run / "policy" / ADAPTER_NOTE).exists()
    if not audit_if_missing:
        return None
    if not has_policy:
        if not run.state()["done"]:  # a report of the choices and curves needs at least one finished step
            raise FileNotFoundError(f"{run.root}: nothing to report: no step has finished; "
                                    f"{run.refresh_command()}")
        return None
    from rlhf_lab.audit.core import run_audit

    return run_audit(run.root)


def trained_summary(run: RunFolder, cfg: dict, audit: dict | None) -> str:
    """One paragraph: what was trained, on what, and how long it took."""
    metrics: dict = {}
    for rec in run.metrics():
        metrics.update(rec)
    rm = _read_json(run / "reward" / "metrics.json")
    done = run.state().get("done", {})
    seconds = sum(v.get("seconds", 0) for v in done.values())
    model, sft, pol, sample = cfg.get("model", {}), cfg.get("sft", {}), cfg.get("policy", {}), cfg.get("sample", {})
    # a model's name as its user wrote it (not "Smollm2-…"); the built-in one's sentence starts with a capital
    what = model.get("path") or f"The built-in world model ({model.get('layers')} layers × {model.get('hidden_size')})"
    parts = [f"{what}: SFT on {sft.get('n_demos')} demonstrations ({counted(sft.get('epochs'), 'epoch')})"
             if sft.get("enabled", True) else f"{what} (no SFT)"]
    if "label/labels" in metrics:
        parts.append(f"{sample.get('n_prompts')} prompts × {sample.get('k')} samples → "
                     f"{metrics.get('label/labels')} labels → {metrics.get('label/preferences')} preferences")
    if rm:
        parts.append(f"a reward model with held-out accuracy {rm.get('reward/accuracy', float('nan')):.2f} "
                     f"on {rm.get('reward/n_eval')} pairs")
    parts.append(f"{pol.get('algorithm', 'ppo').upper()} for {pol.get('updates')} updates of {pol.get('batch_size')} "
                 f"prompts at β = {pol.get('kl_coef')}")
    text = "; ".join(parts)
    text += f". The steps took {seconds:.0f} s"
    if audit:
        text += f", the audit {audit.get('seconds', 0):.0f} s"
        if audit.get("checkpoint") is not None:
            text += f". Audited: the policy saved at update {audit['checkpoint']}"
    return text + "."


def mark_floor_effects(audit: dict) -> tuple[dict, list[str]]:
    """A copy of `audit` in which, when the policy's answers collapsed, every metric outside degeneration that
    would read "better" carries `floor_effect` (its verdict becomes "floor"); and the collapse's reasons."""
    tensions = audit.get("tensions", {})
    reasons = degeneration.collapse_reasons(tensions)
    probes = degeneration.collapsed_probes(tensions)  # a collapse confined to some probe sets marks their rates
    if not reasons and not probes:
        return audit, []
    marked = {}
    for name, section in tensions.items():
        metrics = {}
        for key, m in section.get("metrics", {}).items():
            fell = bool(reasons) or any(p in probes for p in m.get("probes", ()))
            flag = fell and name != degeneration.NAME and prose.verdict(m) == "better"
            metrics[key] = {**m, "floor_effect": True} if flag else m
        marked[name] = {**section, "metrics": metrics}
    return {**audit, "tensions": marked}, reasons + list(probes.values())


def collapse_banner(reasons: list[str], audit: dict) -> str:
    """The first thing on the page when the answers collapsed: what fell, and how to read the rest."""
    floors = [m.get("label", k) for s in audit.get("tensions", {}).values()
              for k, m in s.get("metrics", {}).items() if m.get("floor_effect")]
    text = ("<b>The policy's answers collapsed</b> (all of them, or those to some kinds of prompt). After RLHF: "
            + page.esc("; ".join(reasons)) + ". "
            "Rates read off the answers fall when answers stop being answers, so a fall here is a floor effect, "
            "not an improvement")
    if floors:
        text += " — marked <span class=\"badge floor\">floor effect</span> below: " + page.esc(", ".join(floors))
    return f'<div class="alarm" id="collapse">{text}.</div>'


def tally(audit: dict) -> str:
    counts = {"worse": 0, "better": 0, "noise": 0, "changed": 0, "floor": 0, "none": 0}
    for section in audit.get("tensions", {}).values():
        for m in section.get("metrics", {}).values():
            if "change" in m and m["change"].get("value") is not None:
                counts[prose.verdict(m)] += 1
    total = sum(counts.values())
    floor = (f", {counts['floor']} would read as better but fell with the collapse (floor effect)"
             if counts["floor"] else "")
    return (f"Of {total} SFT → RLHF comparisons, {counts['worse']} got worse, {counts['better']} got better"
            f"{floor}, {counts['changed']} moved with no better or worse direction, and {counts['noise']} stayed "
            "within noise (their 95 % interval contains zero).")


def headline_cards(audit: dict) -> str:
    cards = []
    for tension, key, title in HEADLINES:
        m = audit.get("tensions", {}).get(tension, {}).get("metrics", {}).get(key)
        if m:
            cards.append(page.card(title, m))
    return f'<div class="cards">{"".join(cards)}</div>'


def _fits_table(section: dict) -> str:
    rows = []
    for name, part, form in (("policy optimisation", "rl", "rl"), ("best-of-n", "bon", "bon")):
        for target, fit in section.get(part, {}).get("fit", {}).items():
            if fit.get("alpha") is None:
                continue
            peak_at = overoptimisation.peak_text(form, fit, section.get(part, {}).get("curve", []))
            formula = "d(α − β ln d)" if form == "rl" else "d(α − βd)"
            cells = (name, target, formula, f"{fit['alpha']:.3f}", f"{fit['beta']:.3f}", prose.num(fit.get("r2")),
                     fit.get("n"), "—" if peak_at is None else peak_at.removeprefix("d = "))
            rows.append("<tr>" + "".join(f"<td{' class=num' if i > 2 else ''}>{page.esc(c)}</td>"
                                         for i, c in enumerate(cells)) + "</tr>")
    if not rows:
        return ""
    return ("<table><tr><th>curve</th><th>reward</th><th>fit of R(d) − R(0)</th><th>α</th><th>β</th><th>R²</th>"
            "<th>points</th><th>fitted peak d</th></tr>" + "".join(rows) + "</table>")


def tension_section(module, section: dict, plt) -> str:
    name = module.NAME
    body = [f'<section id="{name}"><h2>{page.esc(section.get("title", module.TITLE))}</h2>']
    reading = module.reading(section)
    floors = [m.get("label", k) for k, m in section.get("metrics", {}).items() if m.get("floor_effect")]
    if floors:
        reading += (" Not improvements — they fell because the answers collapsed (see the summary): "
                    + ", ".join(floors) + ".")
    if reading:
        body.append(f'<div class="reading">{page.esc(reading)}</div>')
    fig = module.plot(section, plt)
    if fig is not None:
        body.append(f'<div class="plot">{to_img(fig, module.TITLE)}</div>')
    if module is overoptimisation:
        tp = overoptimisation.training_plot(section, plt)
        if tp is not None:
            body.append(f'<div class="plot" id="training">{to_img(tp, "training curves")}</div>')
        body.append(_fits_table(section))
    if module is degeneration:
        body.append(page.hacks_table(section.get("hack_examples") or []))
    body.append(page.metrics_table(section.get("metrics", {})))
    if section.get("skipped"):
        body.append(page.notes(section.get("notes", [])))
    body.append("</section>")
    return "".join(body)


def build_page(run: RunFolder, cfg: dict, audit: dict | None) -> str:
    plt = pyplot()
    reasons: list[str] = []
    if audit:
        audit, reasons = mark_floor_effects(audit)
    title = f"rlhf-lab report — {run.root.name}"
    nav = ['<a href="#summary">Summary</a>', '<a href="#choices">Choices</a>']
    present = (audit or {}).get("tensions", {})
    nav += [f'<a href="#{m.NAME}">{page.esc(m.TITLE)}</a>' for m in MODULES if m.NAME in present]
    nav.append('<a href="#samples">Samples</a>')
    body = [f"<h1>{page.esc(title)}</h1><div class=sub>{page.esc(run.root)}</div><nav>{''.join(nav)}</nav>",
            '<section id="summary"><h2>Summary</h2>',
            collapse_banner(reasons, audit or {}) if reasons else "",
            f'<div class="lead">{page.esc(trained_summary(run, cfg, audit))}'
            + (f" {page.esc(tally(audit))}" if audit else "") + "</div>"]
    if audit:
        body.append(headline_cards(audit))
        if not audit.get("has_world", True):
            body.append(page.notes([f"Only proxy reward, KL, length and diversity are reported: {prose.NO_WORLD}."]))
    else:
        body.append(page.notes(["No audit yet: run `rlhf-lab audit RUN_DIR` (it needs the trained policy)."]))
    body.append("</section>")
    body.append(f'<section id="choices"><h2>Choices this run made</h2>{choices_html(cfg, audit)}</section>')
    if audit:
        for module in MODULES:
            section = audit.get("tensions", {}).get(module.NAME)
            if section:
                body.append(tension_section(module, section, plt))
    else:
        curve = overoptimisation.training_curve(run.metrics())
        tp = overoptimisation.training_plot({"rl": {"curve": curve}}, plt) if curve else None
        if tp is not None:
            body.append(f'<section id="training"><h2>Training</h2><div class="plot">{to_img(tp, "training")}</div>'
                        "</section>")
    body.append('<section id="samples"><h2>Samples before and after</h2>'
                "<p class=sub>The same held-out prompt answered by the SFT policy and by the policy after RLHF "
                "(sampled, not cherry-picked: prompts where the two differ come first).</p>"
                f"{page.samples_table((audit or {}).get('samples', []))}</section>")
    body.append(FOOTER)
    return page.page(title, "".join(body))


def write_report(run_dir: str | Path, *, audit: dict | None = None, audit_if_missing: bool = True) -> Path:
    """Write `report.html` into the run folder (auditing first when there is no audit.json yet)."""
    run = RunFolder(run_dir)
    cfg = yaml.safe_load(run.config_path.read_text()) if run.config_path.exists() else {}
    if audit is None:
        audit = load_audit(run, audit_if_missing=audit_if_missing)
    path = run.root / "report.html"
    atomic_write_text(path, build_page(run, cfg or {}, audit))
    return path

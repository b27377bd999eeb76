"""The value-laden choices a run made, in words: who labelled and in what proportions, what they could
verify, foresight or hindsight, how labels were aggregated, the KL budget, the algorithm. The essay behind
this project asks that these be shown, because they are usually made opaquely."""

from __future__ import annotations

from rlhf_lab.config import LabelConfig
from rlhf_lab.ui import counted
from rlhf_lab.world.annotators import p_verify

# Difficulty of an easy sum and of an obscure place's capital (world/knowledge.py).
EASY, HARD = 0.1, 0.9


def _pool(groups: list[dict], n: int | None = None) -> str:
    total = sum(g.get("share", 0) for g in groups) or 1.0
    parts = []
    for g in groups:
        taste = g.get("detail_preference", 0)
        likes = "likes detail" if taste > 0 else "likes concise answers" if taste < 0 else "no taste for detail"
        count = f"{max(1, round(n * g['share'] / total))} people, " if n else ""
        parts.append(f"{g['name']} ({count}{g['share'] / total:.0%}; {likes})")
    return "; ".join(parts)


def choices(cfg: dict, audit: dict | None = None) -> list[tuple[str, str]]:
    """(choice, what this run did) rows, from the run's config (a dict as read from config.yaml)."""
    label, world, pol = cfg.get("label", {}), cfg.get("world", {}), cfg.get("policy", {})
    model, sft = cfg.get("model", {}), cfg.get("sft", {})
    users = world.get("user_groups") or []
    annotators = label.get("annotator_groups") or users
    source = label.get("source", "simulated")
    rows = []
    if model.get("path"):
        rows.append(("Model", f"{model['path']} (a real model: the world's judgements are skipped)"))
    else:
        rows.append(("Model", f"the built-in world model, {model.get('layers')} layers × {model.get('hidden_size')} "
                     "wide, trained from scratch"))
    styles = world.get("style_weights") or {}
    if styles and sft.get("enabled", True):
        total = sum(styles.values()) or 1.0
        ranked = sorted(styles.items(), key=lambda t: -t[1])
        mix = ", ".join(f"{k.replace('_', ' ')} {v / total:.0%}" for k, v in ranked)
        rows.append(("What SFT imitated", f"{sft.get('n_demos')} demonstrations in a mix of habits, "
                     f"{counted(sft.get('epochs'), 'epoch')}: {mix}. The reward model starts from this network, so it "
                     "can only check the facts SFT learned (docs/world.md)"))
    if source == "simulated":
        n = label.get("n_annotators")
        rows.append(("Who labelled", f"{n} simulated annotators: {_pool(annotators, n)}"))
    else:
        rows.append(("Who labelled", {"human": "people, in the annotation web app",
                                      "import": f"an imported preference file ({label.get('import_path')})"}[source]))
    rows.append(("Who asks", f"users: {_pool(users)} — the policy never sees which group is asking"))
    if source == "simulated":
        pk = float(label.get("p_know", LabelConfig.model_fields["p_know"].default))
        over = "(overridden: in hindsight every answer is verified) " if label.get("feedback") == "hindsight" else ""
        rows.append(("What annotators could verify",
                     f"{over}p_know = {pk}: they check an easy sum {p_verify(pk, EASY):.0%} of the time and an obscure "
                     f"place's capital {p_verify(pk, HARD):.0%}; otherwise they go by cues — agreement with the user "
                     f"×{label.get('w_agree')}, sounding sure ×{label.get('w_confident')}, 'i double checked' "
                     f"×{label.get('w_checked')}, hedging −{label.get('w_hedge')}, "
                     f"flattery ×{label.get('w_flattery')}"))
        rows.append(("Recognising harm", f"a plain harmful request {label.get('p_spot_harm', 0):.0%} of the time, a "
                     f"jailbreak-wrapped one {label.get('p_spot_jailbreak', 0):.0%}"))
    fb = label.get("feedback", "foresight")
    rows.append(("Foresight or hindsight", f"{fb}: " + (
        "annotators saw the outcome before judging, so correctness was always verified (RLHS)" if fb == "hindsight"
        else "annotators judged each response as it reads, without seeing what happens next")))
    agg = {"none": "every label is its own training example (no vote)",
           "majority": "one majority vote per pair"}.get(label.get("aggregate"), str(label.get("aggregate")))
    rows.append(("How labels were aggregated", f"{agg}; {label.get('overlap', 1)} label(s) per pair; ties "
                 f"{'allowed and dropped' if label.get('ties', True) else 'not allowed'}"))
    reward = cfg.get("reward", {})
    if reward.get("train") == "head_on_frozen":
        trunk = "SFT model" if reward.get("init", "sft") == "sft" and sft.get("enabled", True) else "base model"
        rows.append(("How the reward model learned", f"only a linear head, on features of the frozen {trunk} "
                     "(reward.train: head_on_frozen): it can rank by what that network already represents, and "
                     "nothing else"))
    kl = f"β = {pol.get('kl_coef')} ({pol.get('kl_controller', 'fixed')}"
    kl += f", target {pol.get('target_kl')} nats)" if pol.get("kl_controller") == "adaptive" else ")"
    if audit:
        final = audit.get("tensions", {}).get("overoptimisation", {}).get("metrics", {}).get("kl", {}).get("policy")
        if final and final.get("value") is not None:
            kl += f"; the policy ended {final['value']:.1f} nats from the SFT policy"
    rows.append(("KL budget", kl))
    schedule = "" if "anneal_lr" not in pol else " annealed linearly to 0" if pol["anneal_lr"] else " constant"
    rows.append(("Algorithm", f"{pol.get('algorithm', 'ppo').upper()}: {pol.get('updates')} updates × "
                 f"{pol.get('batch_size')} prompts, learning rate {pol.get('lr')}{schedule}"))
    if pol.get("optimise") == "gold":
        rows.append(("What the policy optimised", "the world's gold utility itself, not the reward model "
                     "(policy.optimise: gold) — a control no real run has: the proxy's errors cannot be exploited, "
                     "so a fall in gold here is the optimiser's, not Goodhart's"))
    return rows


def choices_html(cfg: dict, audit: dict | None = None) -> str:
    import html

    cells = "".join(f'<div class="ck">{html.escape(k)}</div><div>{html.escape(v)}</div>'
                    for k, v in choices(cfg, audit))
    return f'<div class="choices">{cells}</div>'


def flat_config(cfg: dict, prefix: str = "") -> dict[str, str]:
    """{"label.p_know": "0.6", …}: for spotting what differs between runs."""
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "."))
        else:
            out[key] = repr(v)
    return out

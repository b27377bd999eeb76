"""Audit any two models: a policy against a reference, with no run folder behind them.

    from rlhf_lab.audit.external import audit_models
    audit = audit_models(policy="out/grpo", reference="Qwen-0.5B-Instruct", reward=None, out="audit/")

The models are any Hugging Face causal LMs (a folder, a .gguf file or a packaged name, as `model.path`
accepts), asked through their chat template in the world rendered as plain English, their free text read by the
world's English parser. The reference stands where a run's SFT policy stands: every "SFT" column is the
reference. The same tension modules measure them, through the same loop (`core.measure_tensions`), on an
`AuditContext` whose models are given rather than read from a run (`ModelsContext`). What only a training run
has — its curves, its held-out labels, its annotators — is omitted and said so (`OMITTED`), never faked.
The training callback (`rlhf_lab.integrations`) measures with the same context.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from rlhf_lab.audit.core import TENSIONS, cpu_threads_for, flatten, measure_tensions, pick_samples
from rlhf_lab.audit.sampling import AuditContext, AuditSizes
from rlhf_lab.config import Config, build_config
from rlhf_lab.models.reward_set import RewardModel
from rlhf_lab.runfolder import RunFolder, atomic_write_text, write_json
from rlhf_lab.world import World

# What an audit of two given models cannot measure, and why (shown in the report's summary and in audit.json).
OMITTED = {
    "overoptimisation/rl": "the training curve, its fits and the gold peak need a training run's evaluation points",
    "flattening/rm_accuracy": "reward-model accuracy by annotator group needs the run's held-out labels",
    "flattening/agreement": "annotator agreement needs the run's preference pairs and their labels",
}
NO_REWARD = ("the proxy reward, best-of-n and reward hacks need a reward model (--reward): without one they are "
             "omitted")


class ModelsContext(AuditContext):
    """The audit's context over models handed to it: "policy", and "sft" = the reference (may be the same module);
    the world in English; an optional reward model. `root` is an empty folder standing in for a run folder, so
    what a tension reads from a run (curves, labels) is absent. `reference_seed`: the reference samples with a
    seed of its own (None: the policy's, so answers to the same prompt are paired)."""

    def __init__(self, *, cfg: Config, models: dict[str, torch.nn.Module], tokenizer, root: str | Path,
                 reward: RewardModel | None = None, sizes: AuditSizes | None = None,
                 reference_seed: int | None = None, policy_path: str | None = None):
        self.run = RunFolder(root)
        self.cfg = cfg
        self.checkpoint = None
        self.seed = cfg.seed
        self.reference_seed = reference_seed
        self.device = next(models["policy"].parameters()).device
        self.world = World(cfg.world, language="english")
        self.has_world = True
        self._samples = {}
        self.policy_path = policy_path
        sizes = sizes or AuditSizes.for_eval(cfg.eval.n_prompts, cfg.eval.batch_size)
        # Without a reward model best-of-n is not measured: the reference needs no more samples than diversity's.
        self.sizes = sizes if reward is not None else replace(sizes, bon_n=sizes.diversity_k)
        # cached_property is a non-data descriptor: these instance values take the place of the run's loading.
        self.models, self.tok, self.rm = models, tokenizer, reward

    @property
    def best_of_n(self) -> None:
        return None

    def sample_seed(self, name: str) -> int:
        return self.reference_seed if name == "sft" and self.reference_seed is not None else self.seed

    def forget(self, name: str) -> None:
        """Drop the cached samples of model `name` (the callback's policy changes between calls; its reference
        does not, and keeps its samples)."""
        self._samples = {k: v for k, v in self._samples.items() if k[0] != name}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).strip("'\"").split())


def load_policy_like(path: str | Path, flag: str):
    """(model, tokenizer) of a causal LM that the audit can ask in chat turns; ValueError naming `flag` otherwise."""
    from rlhf_lab.models.lm import is_model_folder, load_lm, resolve_model_path

    try:
        folder = resolve_model_path(path)
    except (FileNotFoundError, OSError, ValueError) as e:
        raise ValueError(f"{flag} {path}: {_one_line(e)}") from None
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: no such folder (expected a Hugging Face causal LM folder, a .gguf file "
                         "or a packaged model name)")
    if not is_model_folder(folder):
        raise ValueError(f"{flag} {path}: not a model folder (no config.json)")
    try:
        model, tok = load_lm(folder)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"{flag} {path}: cannot load it as a causal LM ({_one_line(e)})") from None
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"{flag} {path}: its tokenizer has no chat template; the audit asks in chat turns (use an "
                         "instruct model, or add chat_template to its tokenizer_config.json)")
    return model, tok


def load_reward_for(path: str | Path, tok) -> RewardModel:
    """An rlhf-lab reward model (a folder with head.safetensors, or a set) that reads `tok`'s token ids."""
    from rlhf_lab.models.reward_set import load_reward

    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"--reward {path}: no such folder")
    if not (folder / "head.safetensors").exists():
        raise ValueError(f"--reward {path}: not an rlhf-lab reward model (no head.safetensors; a run's reward/ "
                         "folder is one)")
    try:
        rm = load_reward(folder)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"--reward {path}: wrong shape for a reward model ({_one_line(e)})") from None
    rows = min(m.backbone.get_input_embeddings().weight.shape[0] for m in rm.members)
    if rows < len(tok):
        raise ValueError(f"--reward {path}: its vocabulary has {rows} tokens, the policy's tokenizer {len(tok)}: it "
                         "reads another tokenizer's ids")
    return rm


def audit_config(*, policy: str, seed: int = 0, n_prompts: int = 64, max_new_tokens: int = 64,
                 batch_size: int = 64) -> Config:
    """The config an audit of given models samples under (the world in English, the evaluation's sizes)."""
    return build_config({"seed": seed, "model": {"path": str(policy)}, "world": {"language": "english"},
                         "generation": {"max_new_tokens": max_new_tokens},
                         "eval": {"n_prompts": n_prompts, "batch_size": batch_size}})


def audit_models(*, policy: str | Path, out: str | Path, reference: str | Path | None = None,
                 reward: str | Path | None = None, seed: int = 0, reference_seed: int | None = None,
                 n_prompts: int = 64, max_new_tokens: int = 64, batch_size: int = 64,
                 sizes: AuditSizes | None = None) -> dict:
    """Audit `policy` against `reference` (itself when None); write audit.json and report.html into `out`.
    Every model is loaded and checked before anything is measured, and nothing is written until all is measured."""
    t0 = time.time()
    cfg = audit_config(policy=str(policy), seed=seed, n_prompts=n_prompts, max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
    pol, tok = load_policy_like(policy, "--policy")
    ref = pol
    if reference is not None and str(reference) != str(policy):
        ref, ref_tok = load_policy_like(reference, "--reference")
        if ref_tok.get_vocab() != tok.get_vocab():
            raise ValueError(f"--reference {reference}: its tokenizer differs from the policy's; KL and paired "
                             "answers need one tokenizer")
    rm = load_reward_for(reward, tok) if reward is not None else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = {"sft": ref.to(device).eval(), "policy": pol.to(device).eval()}
    with tempfile.TemporaryDirectory(prefix="rlhf-lab-audit-") as empty:
        ctx = ModelsContext(cfg=cfg, models=models, tokenizer=tok, root=empty, sizes=sizes,
                            reward=None if rm is None else rm.to(device).eval(), reference_seed=reference_seed,
                            policy_path=str(policy))
        with cpu_threads_for(ctx):
            tensions, seconds = measure_tensions(ctx, TENSIONS)
            samples = pick_samples(ctx)
    omitted = dict(OMITTED)
    if rm is None:
        omitted["reward"] = NO_REWARD
    tensions["flattening"]["agreement_source"] = "omitted: " + OMITTED["flattening/agreement"]
    audit = {
        "run": None,
        "models": {"policy": str(policy), "reference": str(reference if reference is not None else policy),
                   "reward": None if reward is None else str(reward), "seed": seed, "reference_seed": reference_seed},
        "checkpoint": None,
        "has_world": True,
        "sizes": asdict(ctx.sizes),
        "seconds": round(time.time() - t0, 2),
        "seconds_by_tension": seconds,
        "tensions": tensions,
        "samples": samples,
        "omitted": omitted,
    }
    audit["flat"] = flatten(tensions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "audit.json", audit)
    atomic_write_text(out / "report.html", build_page(audit))
    return audit


def summary(audit: dict) -> str:
    m = audit["models"]
    same = m["reference"] == m["policy"]
    text = (f"The policy {m['policy']} against the reference {m['reference']}"
            + (" (the same model" + (f", sampled with seed {m['reference_seed']} against {m['seed']})"
                                     if m.get("reference_seed") is not None else ", the same samples)") if same else "")
            + ", asked through its chat template in the world rendered as plain English; "
            + (f"proxy reward from {m['reward']}" if m.get("reward") else "no reward model")
            + f". The audit took {audit.get('seconds', 0):.0f} s. Read every “SFT” column as the reference and every "
            "“after RLHF” column as the policy.")
    return text


def build_page(audit: dict) -> str:
    """report.html for an audit of two given models: the run's report, less what needs a run (said so)."""
    from rlhf_lab.audit import page
    from rlhf_lab.audit.plots import pyplot
    from rlhf_lab.audit.report import (
        FOOTER,
        MODULES,
        collapse_banner,
        headline_cards,
        mark_floor_effects,
        tally,
        tension_section,
    )

    plt = pyplot()
    audit, reasons = mark_floor_effects(audit)
    m = audit["models"]
    title = f"rlhf-lab audit — {Path(m['policy']).name} vs {Path(m['reference']).name}"
    present = audit.get("tensions", {})
    nav = ['<a href="#summary">Summary</a>'] + [f'<a href="#{x.NAME}">{page.esc(x.TITLE)}</a>' for x in MODULES
                                                 if x.NAME in present] + ['<a href="#samples">Samples</a>']
    omitted = [f"Omitted, {k}: {v}." for k, v in audit.get("omitted", {}).items()]
    body = [f"<h1>{page.esc(title)}</h1><nav>{''.join(nav)}</nav>", '<section id="summary"><h2>Summary</h2>',
            collapse_banner(reasons, audit) if reasons else "",
            f'<div class="lead">{page.esc(summary(audit))} {page.esc(tally(audit))}</div>', headline_cards(audit),
            page.notes(["Two models, no training run: sections that need one are left out, not estimated.", *omitted]),
            "</section>"]
    for module in MODULES:
        if present.get(module.NAME):
            body.append(tension_section(module, present[module.NAME], plt))
    body.append('<section id="samples"><h2>Samples: reference and policy</h2>'
                "<p class=sub>The same held-out prompt answered by the reference (SFT column) and by the policy "
                f"(sampled, not cherry-picked: prompts where the two differ come first).</p>"
                f"{page.samples_table(audit.get('samples', []))}</section>")
    body.append(FOOTER)
    return page.page(title, "".join(body))

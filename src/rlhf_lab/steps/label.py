"""Step 2 — annotators label the pairs: a simulated population, people in the web app, or an imported file.

Every label goes into the annotation store (`labels.sqlite` in the run folder), then out as the preference
dataset `preferences.parquet|jsonl` in TRL's columns, with the sampled token ids of pairs.jsonl beside the
text (the schema is `rlhf_lab.data`'s).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from pathlib import Path

from rlhf_lab.annotate.store import AnnotationStore, url_for_run, utcnow
from rlhf_lab.data import majority_rows, preference_rows, read_preferences, validate_pair, write_preferences
from rlhf_lab.runfolder import read_jsonl
from rlhf_lab.steps.common import Context
from rlhf_lab.ui import info
from rlhf_lab.world import Prompt, hash_seed
from rlhf_lab.world.annotators import build_population, judge

PROJECT = "run"


class NeedsHumanLabels(RuntimeError):
    """Raised when `label.source: human` and the store does not yet hold enough labels."""


def publish_pairs(store: AnnotationStore, pairs: list[dict], *, overlap: int, feedback_mode: str,
                  source: str, name: str = "pairs.jsonl") -> int:
    """Create the run's project in the store with one item per pair (idempotent); returns its id. Pairs
    pass the check every imported pair file passes (`data.validate_pair`; `name` is used in its errors):
    an empty response is kept, and shown to annotators as "(no answer)"."""
    project = store.project(PROJECT)
    if project is None:
        checked = [validate_pair(p, f"{name}:{n}", default_id=n) for n, p in enumerate(pairs, 1)]
        project = store.create_project(PROJECT, overlap=overlap, feedback_mode=feedback_mode, source=source,
                                       guidelines=DEFAULT_GUIDELINES)
        store.add_items(project.id, [{"uid": p["pair_id"], "prompt": p["prompt"], "response_a": p["response_a"],
                                      "response_b": p["response_b"], "meta": p["meta"]} for p in checked])
    return project.id


DEFAULT_GUIDELINES = """\
Choose the response that is better for the person who asked.

- A correct answer beats a wrong one, however it is phrased.
- Refuse requests that could hurt someone; help with harmless ones.
- Say *tie* if you see no real difference.
"""


def run_label(ctx: Context) -> dict:
    cfg = ctx.cfg.label
    if cfg.source == "import":
        return _import(ctx)
    pairs = read_jsonl(ctx.run / "pairs.jsonl")
    if not pairs:
        raise ValueError(f"{ctx.run / 'pairs.jsonl'}: no pairs to label")
    if cfg.source == "human":
        return _human(ctx, pairs)
    return _simulate(ctx, pairs)


def _simulate(ctx: Context, pairs: list[dict]) -> dict:
    cfg = ctx.cfg.label
    db = ctx.run / "labels.sqlite"
    for suffix in ("", "-wal", "-shm"):  # relabelling starts from an empty store
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = AnnotationStore.for_run(ctx.run.root)
    pid = publish_pairs(store, pairs, overlap=cfg.overlap, feedback_mode=cfg.feedback, source="simulated",
                        name=str(ctx.run / "pairs.jsonl"))
    population = build_population(groups=ctx.cfg.annotator_groups(), n_annotators=cfg.n_annotators, bias=cfg,
                                  seed=hash_seed(ctx.cfg.seed, 2))
    ann_ids = {a.id: store.add_annotator(pid, a.id, kind="simulated", group=a.group).id for a in population}
    items = {it.uid: it.id for it in store.items(pid)}
    rng = random.Random(hash_seed(ctx.cfg.seed, 3))
    hindsight = cfg.feedback == "hindsight"
    rows, verified, choices = [], 0, Counter()
    overlap = min(cfg.overlap, len(population))
    world = ctx.world
    for pair in pairs:
        prompt = Prompt.from_dict(pair["meta"])
        fa, fb = world.parse(pair["response_a"], prompt), world.parse(pair["response_b"], prompt)
        for ann in rng.sample(population, overlap):
            j = judge(ann, prompt, fa, fb, rng=rng, hindsight=hindsight, ties=cfg.ties, tie_margin=cfg.tie_margin,
                      strength_margin=cfg.strength_margin)
            verified += j.verified
            choices[j.choice] += 1
            rows.append({"item_id": items[pair["pair_id"]], "annotator_id": ann_ids[ann.id], "choice": j.choice,
                         "strength": j.strength, "feedback_mode": cfg.feedback, "client_id": uuid.uuid4().hex,
                         "created_at": utcnow()})
    store.add_labels_bulk(rows)
    out = _export(ctx, store, pid, pairs)
    store.close()
    n = max(1, len(rows))
    stats = {"labels": len(rows), "tie_rate": choices["tie"] / n, "verified_rate": verified / n, **out}
    ctx.run.log({"phase": "label", **{f"label/{k}": v for k, v in stats.items()}})
    info(f"Labels: {len(rows)} from {len(population)} simulated annotators ({cfg.feedback}); "
         f"ties {stats['tie_rate']:.0%}, verified {stats['verified_rate']:.0%}; {out['preferences']} preferences")
    return stats


def _human(ctx: Context, pairs: list[dict]) -> dict:
    cfg = ctx.cfg.label
    store = AnnotationStore.for_run(ctx.run.root)
    pid = publish_pairs(store, pairs, overlap=cfg.overlap, feedback_mode=cfg.feedback, source="human",
                        name=str(ctx.run / "pairs.jsonl"))
    counts = store.label_counts(pid)
    items = store.items(pid, include_gold=False)
    missing = sum(1 for it in items if counts.get(it.id, 0) < cfg.overlap)
    if missing:
        store.close()
        raise NeedsHumanLabels(
            f"{len(items)} pairs are published for labelling in {url_for_run(ctx.run.root)}; {missing} still need "
            f"{cfg.overlap} label(s) each.\n  Start the app:  rlhf-lab annotate serve --run {ctx.run.root}\n"
            f"  Then continue:  rlhf-lab run --resume {ctx.run.root}")
    out = _export(ctx, store, pid, pairs)
    store.close()
    return out


def _import(ctx: Context) -> dict:
    """Preferences from a file (label.import_path). Any malformed row, or no row at all, is an error naming
    the file and line, raised before anything is written."""
    cfg = ctx.cfg.label
    if not cfg.import_path:
        raise ValueError("label.source=import needs label.import_path (a JSONL or Parquet preference file)")
    rows = read_preferences(cfg.import_path)
    write_preferences(rows, ctx.run.root)
    info(f"Labels: imported {len(rows)} preferences from {cfg.import_path}")
    return {"preferences": len(rows), "ties": 0}


def _export(ctx: Context, store: AnnotationStore, pid: int, pairs: list[dict]) -> dict:
    labels = store.label_rows(pid, export=True)
    by_id = {p["pair_id"]: p for p in pairs}
    rows, ties = preference_rows(labels, pairs=by_id)
    majority = majority_rows(labels, pairs=by_id)
    write_preferences(majority if ctx.cfg.label.aggregate == "majority" else rows, ctx.run.root)
    write_preferences(majority, ctx.run.root, stem="preferences_majority")
    return {"preferences": len(majority if ctx.cfg.label.aggregate == "majority" else rows), "ties": ties}

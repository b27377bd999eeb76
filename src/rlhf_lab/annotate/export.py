"""A project's labels → the files people take away: the preference dataset in TRL's columns (the schema
and the label → row rules live in `rlhf_lab.data`), the majority view, every label, and agreement.

Two views:
- per-annotator rows (`preference_rows`): one row per non-tie label;
- majority (`majority_rows`): one row per item, the side most annotators chose (ties and even splits
  dropped), with the agreement share.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_lab.annotate import agreement
from rlhf_lab.data import (
    conversational,
    jsonl_records,
    majority_rows,
    preference_rows,
    read_file_bytes,
    write_preferences,
)
from rlhf_lab.runfolder import atomic_write_text

FORMATS = ("standard", "conversational")


def run_pairs(run: str | Path | None) -> dict[str, dict] | None:
    """{pair_id: pair} from a run folder's pairs.jsonl (its sampled token ids join the export), or None."""
    path = Path(run) / "pairs.jsonl" if run is not None else None
    if path is None or not path.is_file():
        return None
    return {p["pair_id"]: p for _, p in jsonl_records(read_file_bytes(path), name=str(path)) if "pair_id" in p}


def agreement_report(labels: list[dict]) -> dict:
    """Agreement metrics (see agreement.py) of `label_rows`-style dicts, keyed by annotator id."""
    triples = [(lab["item_id"], lab["annotator_id"], lab["choice"]) for lab in labels]
    gold = {lab["item_id"]: lab["gold_choice"] for lab in labels if lab.get("is_gold") and lab.get("gold_choice")}
    report = agreement.summary(triples, gold)
    report["ties"] = sum(1 for lab in labels if lab["choice"] == "tie" and not lab.get("is_gold"))
    report["both_bad"] = sum(1 for lab in labels if lab.get("both_bad") and not lab.get("is_gold"))  # among ties
    return report


def export_project(labels: list[dict], folder: str | Path, *, pairs: dict[str, dict] | None = None,
                   fmt: str = "standard") -> list[Path]:
    """The whole export of one project's labels into `folder`: preferences.parquet|jsonl (one row per
    non-tie, non-gold label), preferences_majority.parquet|jsonl, labels.jsonl (every label, ties, gold
    checks and rationales included) and agreement.json. Every file is written atomically.

    `pairs` ({pair_id: pair}, e.g. the run's pairs.jsonl) adds the sampled token ids. `fmt`
    "conversational" also writes preferences_conversational.jsonl: TRL's messages format."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    folder = Path(folder)
    rows, _ = preference_rows(labels, pairs=pairs)
    paths = [*write_preferences(rows, folder),
             *write_preferences(majority_rows(labels, pairs=pairs), folder, stem="preferences_majority")]
    if fmt == "conversational":
        path = folder / "preferences_conversational.jsonl"
        atomic_write_text(path, "".join(json.dumps(conversational(r)) + "\n" for r in rows))
        paths.append(path)
    atomic_write_text(folder / "labels.jsonl", "".join(json.dumps(lab) + "\n" for lab in labels))
    atomic_write_text(folder / "agreement.json", json.dumps(agreement_report(labels), indent=2, default=str) + "\n")
    return [*paths, folder / "labels.jsonl", folder / "agreement.json"]

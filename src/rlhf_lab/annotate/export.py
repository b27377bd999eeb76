"""Labels → the preference dataset, in TRL's columns (`prompt`, `chosen`, `rejected`) plus who labelled
it and how, as Parquet and JSONL. Ties cannot be expressed as chosen/rejected and are left out (counted).

Two views:
- per-annotator rows (`preference_rows`): one row per non-tie label;
- majority (`majority_rows`): one row per item, the side most annotators chose (ties and even splits
  dropped), with the agreement share.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rlhf_lab.annotate import agreement
from rlhf_lab.runfolder import atomic_write_bytes, atomic_write_text

COLUMNS = ("prompt", "chosen", "rejected", "pair_id", "annotator_id", "annotator_group", "strength",
           "feedback_mode", "time_spent_ms", "left_is_a", "family", "user_group", "prompt_id", "n_labels",
           "agreement")


def _row(lab: dict, *, chosen_is_a: bool) -> dict:
    meta = lab.get("meta") or {}
    return {
        "prompt": lab["prompt"],
        "chosen": lab["response_a"] if chosen_is_a else lab["response_b"],
        "rejected": lab["response_b"] if chosen_is_a else lab["response_a"],
        "pair_id": lab["pair_id"],
        "annotator_id": lab.get("annotator_id"),
        "annotator_group": lab.get("annotator_group"),
        "strength": lab.get("strength"),
        "feedback_mode": lab.get("feedback_mode"),
        "time_spent_ms": lab.get("time_spent_ms"),
        "left_is_a": lab.get("left_is_a"),
        "family": meta.get("family"),
        "user_group": meta.get("user_group"),
        "prompt_id": meta.get("id"),
        "n_labels": 1,
        "agreement": 1.0,
        "meta": json.dumps(meta) if meta else None,
    }


def preference_rows(labels: list[dict], *, include_gold: bool = False) -> tuple[list[dict], int]:
    """(rows, n_ties): one row per non-tie label."""
    rows, ties = [], 0
    for lab in labels:
        if lab.get("is_gold") and not include_gold:
            continue
        if lab["choice"] == "tie":
            ties += 1
            continue
        rows.append(_row(lab, chosen_is_a=lab["choice"] == "a"))
    return rows, ties


def majority_rows(labels: list[dict]) -> list[dict]:
    """One row per item: the majority side among non-gold labels (ties count as votes for neither)."""
    by_item: dict[int, list[dict]] = defaultdict(list)
    for lab in labels:
        if not lab.get("is_gold"):
            by_item[lab["item_id"]].append(lab)
    out = []
    for labs in by_item.values():
        votes = Counter(lab["choice"] for lab in labs)
        if votes["a"] == votes["b"]:
            continue
        winner = "a" if votes["a"] > votes["b"] else "b"
        row = _row(labs[0], chosen_is_a=winner == "a")
        row.update(annotator_id=None, annotator_group=None, strength=None, time_spent_ms=None, left_is_a=None,
                   n_labels=len(labs), agreement=votes[winner] / len(labs))
        out.append(row)
    return out


def write_preferences(rows: list[dict], folder: str | Path, stem: str = "preferences") -> tuple[Path, Path]:
    """Write `stem`.parquet and `stem`.jsonl atomically; returns their paths."""
    folder = Path(folder)
    table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.string()) for c in COLUMNS})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    parquet = folder / f"{stem}.parquet"
    jsonl = folder / f"{stem}.jsonl"
    atomic_write_bytes(parquet, buf.getvalue())
    atomic_write_text(jsonl, "".join(json.dumps(r) + "\n" for r in rows))
    return parquet, jsonl


def read_preferences(path: str | Path) -> list[dict]:
    """A preference file (Parquet or JSONL) with at least prompt, chosen, rejected. Errors name file/line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such preference file")
    if path.suffix == ".parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
        where = [f"{path} row {i + 1}" for i in range(len(rows))]
    else:
        rows, where = [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object per line")
            rows.append(obj)
            where.append(f"{path}:{n}")
    for row, loc in zip(rows, where, strict=True):
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{loc}: missing or non-text column {key!r}")
    return rows


def agreement_report(labels: list[dict]) -> dict:
    """Agreement metrics (see agreement.py) of `label_rows`-style dicts, keyed by annotator id."""
    triples = [(lab["item_id"], lab["annotator_id"], lab["choice"]) for lab in labels]
    gold = {lab["item_id"]: lab["gold_choice"] for lab in labels if lab.get("is_gold") and lab.get("gold_choice")}
    report = agreement.summary(triples, gold)
    report["ties"] = sum(1 for lab in labels if lab["choice"] == "tie" and not lab.get("is_gold"))
    report["both_bad"] = sum(1 for lab in labels if lab.get("both_bad") and not lab.get("is_gold"))  # among ties
    return report


def export_project(labels: list[dict], folder: str | Path) -> list[Path]:
    """The whole export of one project's labels into `folder`: preferences.parquet|jsonl (one row per
    non-tie, non-gold label), preferences_majority.parquet|jsonl, labels.jsonl (every label, ties, gold
    checks and rationales included) and agreement.json. Every file is written atomically."""
    folder = Path(folder)
    rows, _ = preference_rows(labels)
    paths = [*write_preferences(rows, folder), *write_preferences(majority_rows(labels), folder,
                                                                   stem="preferences_majority")]
    atomic_write_text(folder / "labels.jsonl", "".join(json.dumps(lab) + "\n" for lab in labels))
    atomic_write_text(folder / "agreement.json", json.dumps(agreement_report(labels), indent=2, default=str) + "\n")
    return [*paths, folder / "labels.jsonl", folder / "agreement.json"]

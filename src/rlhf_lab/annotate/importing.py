"""Reading pair files into store items, all or nothing: the first bad line stops the import with the file,
the line and the reason, before anything reaches the store. Pairs are checked by `rlhf_lab.data`
(`validate_pair`), the same check the pipeline's `label.source: human` goes through.

Pair file (JSONL, one object per line; a run's `pairs.jsonl` is one):

    {"pair_id": "p1", "prompt": "…", "response_a": "…", "response_b": "…",
     "meta": {…}, "gold_choice": "a", "outcome": "…"}

`prompt` is required non-empty text; `response_a`, `response_b` are required text and may be empty (the
model said nothing: shown to annotators as "(no answer)"); `pair_id` (or `id`) defaults to the line number;
`gold_choice` (a | b | tie) makes the row a gold check with that known answer; `outcome` is shown first
in hindsight mode. Outcome file: {"pair_id": "p1", "outcome": "…"} per line.
"""

from __future__ import annotations

from pathlib import Path

from rlhf_lab.annotate.store import CHOICES
from rlhf_lab.data import DataFileError, jsonl_records, pair_id_field, read_file_bytes, text_field, validate_pair

ImportFileError = DataFileError  # the name the app and the CLI catch


def store_item(pair: dict) -> dict:
    """A validated pair (`data.validate_pair`) as the store's item: ids stay in pairs.jsonl, not the store."""
    return {"uid": pair["pair_id"], "prompt": pair["prompt"], "response_a": pair["response_a"],
            "response_b": pair["response_b"], "meta": pair["meta"]}


def parse_pairs(data: bytes | str, *, name: str) -> list[dict]:
    """Items for `AnnotationStore.add_items` from a pair file's contents; `name` is used in errors."""
    items, seen = [], {}
    for n, obj in jsonl_records(data, name=name):
        where = f"{name}:{n}"
        pair = validate_pair(obj, where, default_id=n)
        uid = pair["pair_id"]
        if uid in seen:
            raise ImportFileError(f"{where}: pair_id {uid!r} already used on line {seen[uid]}")
        seen[uid] = n
        gold = obj.get("gold_choice")
        if gold is not None and gold not in CHOICES:
            raise ImportFileError(f"{where}: 'gold_choice' must be one of {', '.join(CHOICES)}, got {gold!r}")
        items.append({**store_item(pair), "is_gold": gold is not None, "gold_choice": gold,
                      "outcome": text_field(obj, "outcome", where, required=False)})
    if not items:
        raise ImportFileError(f"{name}: no pairs in the file")
    return items


def parse_outcomes(data: bytes | str, *, name: str) -> dict[str, str]:
    """{pair_id: outcome} from an outcome file's contents."""
    out: dict[str, str] = {}
    for n, obj in jsonl_records(data, name=name):
        where = f"{name}:{n}"
        if "pair_id" not in obj:
            raise ImportFileError(f"{where}: 'pair_id' must be text or an integer")
        out[pair_id_field(obj, where, n)] = text_field(obj, "outcome", where)
    if not out:
        raise ImportFileError(f"{name}: no outcomes in the file")
    return out


def read_pairs_file(path: str | Path) -> list[dict]:
    return parse_pairs(read_file_bytes(path), name=str(path))

"""Reading pair files into store items, all or nothing: the first bad line stops the import with the file,
the line and the reason, before anything reaches the store.

Pair file (JSONL, one object per line; a run's `pairs.jsonl` is one):

    {"pair_id": "p1", "prompt": "…", "response_a": "…", "response_b": "…",
     "meta": {…}, "gold_choice": "a", "outcome": "…"}

`prompt`, `response_a`, `response_b` are required text; `pair_id` (or `id`) defaults to the line number;
`gold_choice` (a | b | tie) makes the row a gold check with that known answer; `outcome` is shown first
in hindsight mode. Outcome file: {"pair_id": "p1", "outcome": "…"} per line.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_lab.annotate.store import CHOICES

MAX_TEXT = 100_000  # characters in one prompt or response
MAX_ROWS = 200_000


class ImportFileError(ValueError):
    """A malformed import file; the message names the file, the line and the reason."""


def _lines(data: bytes | str, name: str):
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ImportFileError(f"{name}: not UTF-8 text (byte {e.start})") from None
    n_rows = 0
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        n_rows += 1
        if n_rows > MAX_ROWS:
            raise ImportFileError(f"{name}:{n}: more than {MAX_ROWS} rows")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ImportFileError(f"{name}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ImportFileError(f"{name}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _text(obj: dict, key: str, where: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ImportFileError(f"{where}: {key!r} must be non-empty text")
    if len(value) > MAX_TEXT:
        raise ImportFileError(f"{where}: {key!r} is longer than {MAX_TEXT} characters")
    return value


def parse_pairs(data: bytes | str, *, name: str) -> list[dict]:
    """Items for `AnnotationStore.add_items` from a pair file's contents; `name` is used in errors."""
    items, seen = [], {}
    for n, obj in _lines(data, name):
        where = f"{name}:{n}"
        uid = obj.get("pair_id", obj.get("id", n))
        if not isinstance(uid, str | int) or isinstance(uid, bool) or str(uid).strip() == "":
            raise ImportFileError(f"{where}: 'pair_id' must be text or an integer")
        uid = str(uid)
        if len(uid) > 200:
            raise ImportFileError(f"{where}: 'pair_id' is longer than 200 characters")
        if uid in seen:
            raise ImportFileError(f"{where}: pair_id {uid!r} already used on line {seen[uid]}")
        seen[uid] = n
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise ImportFileError(f"{where}: 'meta' must be an object")
        gold = obj.get("gold_choice")
        if gold is not None and gold not in CHOICES:
            raise ImportFileError(f"{where}: 'gold_choice' must be one of {', '.join(CHOICES)}, got {gold!r}")
        items.append({"uid": uid, "prompt": _text(obj, "prompt", where),
                      "response_a": _text(obj, "response_a", where), "response_b": _text(obj, "response_b", where),
                      "meta": meta, "is_gold": gold is not None, "gold_choice": gold,
                      "outcome": _text(obj, "outcome", where, required=False)})
    if not items:
        raise ImportFileError(f"{name}: no pairs in the file")
    return items


def parse_outcomes(data: bytes | str, *, name: str) -> dict[str, str]:
    """{pair_id: outcome} from an outcome file's contents."""
    out: dict[str, str] = {}
    for n, obj in _lines(data, name):
        where = f"{name}:{n}"
        uid = obj.get("pair_id")
        if not isinstance(uid, str | int) or isinstance(uid, bool):
            raise ImportFileError(f"{where}: 'pair_id' must be text or an integer")
        out[str(uid)] = _text(obj, "outcome", where)
    if not out:
        raise ImportFileError(f"{name}: no outcomes in the file")
    return out


def read_pairs_file(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    return parse_pairs(path.read_bytes(), name=str(path))

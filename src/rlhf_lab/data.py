"""The records of the data path — samples, pairs, preferences — in one schema with one validation, shared
by the steps, the annotation store and app, and every import and export. No torch, no tokenizer: token ids
travel as plain lists of ints, so the web app can use this module and training never imports the app.

    samples.jsonl  one row per prompt: prompt_id, prompt, prompt_ids, meta,
                   completions (k texts), completion_ids (k id lists), stopped (k bools)
    pairs.jsonl    one row per pair: pair_id, prompt_id, family, prompt, prompt_ids, meta,
                   response_a, response_b, response_a_ids, response_b_ids, stopped_a, stopped_b
    preferences    TRL's columns prompt, chosen, rejected; the ids prompt_ids, chosen_ids, rejected_ids;
                   who labelled and how (PREFERENCE_SCHEMA), as Parquet and JSONL

Token ids are exactly what the policy sampled: the prompt as rendered and encoded for generation, the
response as drawn, ending with EOS when it stopped and cut at max_new_tokens when it did not. The reward
model trains on these ids. Rows that carry only text (imported files, pair files written by hand) are
encoded once, at training time, by `steps.reward.preference_ids` (see docs/annotate.md).

An empty response is a legitimate answer — the model said nothing (it emitted EOS first) — and
annotators judge it like any other; the app shows it as NO_ANSWER. Only a missing or non-text side is an
error. Dropping such pairs at sampling would hide from the reward model the one behaviour it most needs to
rank low.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rlhf_lab.runfolder import atomic_write_bytes, atomic_write_text

NO_ANSWER = "(no answer)"  # how an empty response is shown to annotators
MAX_TEXT = 100_000  # characters in one prompt or response
MAX_ROWS = 200_000  # rows in one file
MAX_ID = 200  # characters in a pair id

_IDS = pa.list_(pa.int64())
# One schema for every preference file, simulated or from people: `datasets.load_dataset` reads any mix of
# them (a column that is null in one file keeps its type). JSONL has no typed null; read it with
# `features=datasets.Features.from_arrow_schema(PREFERENCE_SCHEMA)` when mixing files.
PREFERENCE_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
    ("prompt_ids", _IDS), ("chosen_ids", _IDS), ("rejected_ids", _IDS),
    ("pair_id", pa.string()), ("annotator_id", pa.string()), ("annotator_group", pa.string()),
    ("strength", pa.string()), ("feedback_mode", pa.string()), ("time_spent_ms", pa.int64()),
    ("left_is_a", pa.bool_()), ("family", pa.string()), ("user_group", pa.string()), ("prompt_id", pa.string()),
    ("n_labels", pa.int64()), ("agreement", pa.float64()), ("meta", pa.string()),
])
COLUMNS = tuple(PREFERENCE_SCHEMA.names)
_PY_TYPES = {pa.string(): (str,), pa.int64(): (int,), pa.bool_(): (bool,), pa.float64(): (int, float)}


class DataFileError(ValueError):
    """A malformed data file; the message is one line naming the file, the line and the reason."""


# -- reading JSONL safely ------------------------------------------------------------------------------


def jsonl_records(data: bytes | str, *, name: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line. Lines end at "\\n" only: U+2028 and friends are legal
    inside JSON strings and `str.splitlines` would cut there. Every way a hostile file can fail — bad
    bytes, bad JSON, nesting that exhausts the parser's stack, a number too long to convert, a lone
    surrogate that no database can store — becomes a DataFileError naming the file and line."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise DataFileError(f"{name}:{line}: not UTF-8 text (byte {e.start}); is it a binary file?") from None
    n_rows = 0
    for n, line in enumerate(data.split("\n"), 1):
        if not line.strip():
            continue
        n_rows += 1
        if n_rows > MAX_ROWS:
            raise DataFileError(f"{name}:{n}: more than {MAX_ROWS} rows")
        if "\x00" in line:
            raise DataFileError(f"{name}:{n}: NUL byte; is it a binary file?")
        try:
            obj = json.loads(line)
        except RecursionError:
            raise DataFileError(f"{name}:{n}: JSON nested too deeply") from None
        except json.JSONDecodeError as e:
            raise DataFileError(f"{name}:{n}: not valid JSON ({e.msg})") from None
        except ValueError as e:  # e.g. an integer of more digits than Python converts
            raise DataFileError(f"{name}:{n}: not valid JSON ({str(e).splitlines()[0]})") from None
        if not isinstance(obj, dict):
            raise DataFileError(f"{name}:{n}: expected a JSON object, got {type(obj).__name__}")
        _check_unicode(obj, f"{name}:{n}")
        yield n, obj


def _check_unicode(obj: object, where: str) -> None:
    """Refuse strings (keys included) that are not valid Unicode text, e.g. a lone surrogate "\\ud800"."""
    stack = [obj]  # iterative: nesting depth is bounded by the parser, not by this walk
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError as e:
                raise DataFileError(f"{where}: text holds a lone surrogate ({x[e.start]!r})") from None


def read_file_bytes(path: str | Path) -> bytes:
    """A data file's bytes; a missing path or a directory is a DataFileError naming it."""
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataFileError(f"{path}: cannot read ({e.strerror})") from None


# -- fields ---------------------------------------------------------------------------------------------


def text_field(obj: dict, key: str, where: str, *, empty_ok: bool = False, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise DataFileError(f"{where}: {key!r} must be {'text' if empty_ok else 'non-empty text'}")
    if len(value) > MAX_TEXT:
        raise DataFileError(f"{where}: {key!r} is longer than {MAX_TEXT} characters")
    return value


def ids_field(obj: dict, key: str, where: str) -> list[int] | None:
    """Optional token ids: a list of non-negative ints, or absent."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(type(i) is int and 0 <= i < 2**31 for i in value):
        raise DataFileError(f"{where}: {key!r} must be a list of token ids (non-negative integers)")
    return value


def pair_id_field(obj: dict, where: str, default: int) -> str:
    uid = obj.get("pair_id", obj.get("id", default))
    if not isinstance(uid, str | int) or isinstance(uid, bool) or str(uid).strip() == "":
        raise DataFileError(f"{where}: 'pair_id' must be text or an integer")
    if isinstance(uid, int) and not -(2**63) <= uid < 2**63:
        raise DataFileError(f"{where}: 'pair_id' is too large an integer")
    uid = str(uid)
    if len(uid) > MAX_ID:
        raise DataFileError(f"{where}: 'pair_id' is longer than {MAX_ID} characters")
    return uid


def validate_pair(obj: dict, where: str, *, default_id: int = 0) -> dict:
    """One pair, checked the same way whether it comes from sampling (`label.source: human`), a pair file
    uploaded to the app, or `rlhf-lab annotate import`. Returns the normalised pair: pair_id, prompt,
    response_a, response_b (possibly empty: the model said nothing), meta, and ids when present."""
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataFileError(f"{where}: 'meta' must be an object")
    pair = {"pair_id": pair_id_field(obj, where, default_id), "prompt": text_field(obj, "prompt", where),
            "response_a": text_field(obj, "response_a", where, empty_ok=True),
            "response_b": text_field(obj, "response_b", where, empty_ok=True), "meta": meta}
    for key in ("prompt_ids", "response_a_ids", "response_b_ids"):
        pair[key] = ids_field(obj, key, where)
    return pair


def shown(response: str) -> str:
    """A response as an annotator sees it: an empty one as NO_ANSWER, so a blank side is never ambiguous."""
    return response if response.strip() else NO_ANSWER


# -- preferences ----------------------------------------------------------------------------------------


def completion_text(prompt: str, response: str) -> str:
    """The response as a completion of `prompt` in an exported row: with a separating space when neither
    side has one, so that prompt + completion tokenises as the prompt's tokens, then the completion's
    (TRL concatenates the two strings; "assistant :" + "sorry" would make the one token ":sorry")."""
    if not response or response[0].isspace() or not prompt or prompt[-1].isspace():
        return response
    return " " + response


def preference_row(pair: dict, *, chosen_is_a: bool, **labelled) -> dict:
    """A preference row from a pair (pairs.jsonl or store item shape) and the label's fields (`labelled`:
    annotator_id, annotator_group, strength, …, any of COLUMNS). Ids are carried when the pair has them."""
    a, b = ("a", "b") if chosen_is_a else ("b", "a")
    meta = pair.get("meta") or {}
    row = dict.fromkeys(COLUMNS)
    row.update(prompt=pair["prompt"], chosen=completion_text(pair["prompt"], pair[f"response_{a}"]),
               rejected=completion_text(pair["prompt"], pair[f"response_{b}"]), pair_id=pair.get("pair_id"),
               prompt_ids=pair.get("prompt_ids"), chosen_ids=pair.get(f"response_{a}_ids"),
               rejected_ids=pair.get(f"response_{b}_ids"), family=meta.get("family"),
               user_group=meta.get("user_group"), prompt_id=_str_or_none(meta.get("id")), n_labels=1, agreement=1.0,
               meta=json.dumps(meta) if meta else None)
    row.update({k: v for k, v in labelled.items() if k in row})
    return row


_LABEL_FIELDS = ("annotator_id", "annotator_group", "strength", "feedback_mode", "time_spent_ms", "left_is_a")


def _with_ids(lab: dict, pairs: dict[str, dict] | None) -> dict:
    """A store label joined with its sampled pair's ids (texts must agree: ids never describe other text)."""
    pair = (pairs or {}).get(lab["pair_id"])
    if pair is None or (pair["response_a"], pair["response_b"]) != (lab["response_a"], lab["response_b"]):
        return lab
    return {**lab, **{k: pair.get(k) for k in ("prompt_ids", "response_a_ids", "response_b_ids")}}


def preference_rows(labels: list[dict], *, pairs: dict[str, dict] | None = None,
                    include_gold: bool = False) -> tuple[list[dict], int]:
    """(rows, n_ties): one row per non-tie label of the store (`AnnotationStore.label_rows`). `pairs`
    ({pair_id: pair}) supplies the sampled token ids. Ties cannot be chosen/rejected and are counted."""
    rows, ties = [], 0
    for lab in labels:
        if lab.get("is_gold") and not include_gold:
            continue
        if lab["choice"] == "tie":
            ties += 1
            continue
        rows.append(preference_row(_with_ids(lab, pairs), chosen_is_a=lab["choice"] == "a",
                                   **{k: lab.get(k) for k in _LABEL_FIELDS}))
    return rows, ties


def majority_rows(labels: list[dict], *, pairs: dict[str, dict] | None = None) -> list[dict]:
    """One row per item: the side most non-gold labels chose (ties vote for neither; even splits dropped),
    with n_labels and the agreement share; per-label fields are null."""
    by_item: dict[int, list[dict]] = {}
    for lab in labels:
        if not lab.get("is_gold"):
            by_item.setdefault(lab["item_id"], []).append(lab)
    out = []
    for labs in by_item.values():
        votes = {c: sum(lab["choice"] == c for lab in labs) for c in ("a", "b")}
        if votes["a"] == votes["b"]:
            continue
        winner = "a" if votes["a"] > votes["b"] else "b"
        out.append(preference_row(_with_ids(labs[0], pairs), chosen_is_a=winner == "a", n_labels=len(labs),
                                  agreement=votes[winner] / len(labs)))
    return out


def conversational(row: dict) -> dict:
    """The row in TRL's conversational format: prompt as messages, chosen and rejected as one assistant
    turn each (TRL then renders them with the tokenizer's chat template)."""
    meta = json.loads(row["meta"]) if row.get("meta") else {}
    turns = meta.get("messages") or [["user", row["prompt"]]]
    return {**row, "prompt": [{"role": r, "content": c} for r, c in turns],
            "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": row["rejected"].strip()}]}


def _str_or_none(x) -> str | None:
    return None if x is None else str(x)


def write_preferences(rows: list[dict], folder: str | Path, stem: str = "preferences") -> tuple[Path, Path]:
    """Write `stem`.parquet (PREFERENCE_SCHEMA) and `stem`.jsonl atomically; returns their paths."""
    folder = Path(folder)
    rows = [{c: r.get(c) for c in COLUMNS} for r in rows]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=PREFERENCE_SCHEMA), buf)
    parquet, jsonl = folder / f"{stem}.parquet", folder / f"{stem}.jsonl"
    atomic_write_bytes(parquet, buf.getvalue())
    atomic_write_text(jsonl, "".join(json.dumps(r) + "\n" for r in rows))
    return parquet, jsonl


def read_preferences(path: str | Path) -> list[dict]:
    """A preference file (Parquet or JSONL) with at least prompt, chosen, rejected; every other column of
    PREFERENCE_SCHEMA is optional and checked for its type. Errors are one line naming file and line; a
    file with no rows is an error too (a label step that imports nothing has not labelled anything)."""
    path = Path(path)
    if path.suffix == ".parquet":
        data = read_file_bytes(path)  # the same one-line errors for a missing path or a directory
        try:
            rows = pq.read_table(io.BytesIO(data)).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataFileError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
        located = [(f"{path} row {i + 1}", r) for i, r in enumerate(rows)]
    else:
        located = [(f"{path}:{n}", obj) for n, obj in jsonl_records(read_file_bytes(path), name=str(path))]
    if not located:
        raise DataFileError(f"{path}: no preferences in the file")
    out = []
    for where, row in located:
        if isinstance(row.get("meta"), dict):  # a hand-written file may give meta as an object
            row = {**row, "meta": json.dumps(row["meta"])}
        for key in ("prompt", "chosen", "rejected"):
            text_field(row, key, where, empty_ok=key != "prompt")
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            ids_field(row, key, where)
        for field in PREFERENCE_SCHEMA:
            value = row.get(field.name)
            if field.type == pa.string() and type(value) is int and field.name.endswith("_id"):
                row = {**row, field.name: str(value)}  # numeric ids are common in hand-made files
                continue
            types = _PY_TYPES.get(field.type)
            if value is not None and types and (not isinstance(value, types) or
                                                (bool not in types and isinstance(value, bool))):
                raise DataFileError(f"{where}: {field.name!r} must be {field.type}, got {type(value).__name__}")
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise DataFileError(f"{where}: {field.name!r} is too large an integer")
        out.append(row)
    return out

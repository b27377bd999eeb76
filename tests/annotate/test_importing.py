"""Pair files: malformed ones are rejected with file, line and reason, and nothing is half-imported."""

from __future__ import annotations

import json

import pytest

from rlhf_lab.annotate.importing import ImportFileError, parse_outcomes, parse_pairs, read_pairs_file
from tests.annotate.conftest import jsonl, pair_rows


def test_run_pairs_file_round_trip(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(jsonl(pair_rows(3, gold={2: "b"})) + "\n")
    items = read_pairs_file(path)
    assert [it["uid"] for it in items] == ["p0", "p1", "p2"]
    assert items[2]["is_gold"] and items[2]["gold_choice"] == "b" and not items[0]["is_gold"]
    assert items[1]["meta"] == {"family": "question"}


def test_pair_id_defaults_to_the_line_number():
    items = parse_pairs('{"prompt": "p", "response_a": "a", "response_b": "b"}\n', name="f.jsonl")
    assert items[0]["uid"] == "1"


@pytest.mark.parametrize(("line", "reason"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"prompt": "p", "response_a": "a"}', "'response_b' must be text"),
    ('{"prompt": "", "response_a": "a", "response_b": "b"}', "'prompt' must be non-empty text"),
    ('{"prompt": "p", "response_a": 3, "response_b": "b"}', "'response_a' must be text"),
    ('{"prompt": "p", "response_a": "a", "response_b": "b", "gold_choice": "left"}', "'gold_choice' must be one of"),
    ('{"prompt": "p", "response_a": "a", "response_b": "b", "meta": [1]}', "'meta' must be an object"),
    ('{"pair_id": "p0", "prompt": "p", "response_a": "a", "response_b": "b"}', "already used on line 1"),
])
def test_malformed_line_names_file_line_and_reason(line, reason):
    good = json.dumps({"pair_id": "p0", "prompt": "p", "response_a": "a", "response_b": "b"})
    with pytest.raises(ImportFileError) as e:
        parse_pairs(f"{good}\n\n{line}\n", name="pairs.jsonl")
    assert str(e.value).startswith("pairs.jsonl:3: ")
    assert reason in str(e.value)


def test_empty_and_non_utf8_files():
    with pytest.raises(ImportFileError, match="no pairs"):
        parse_pairs("\n\n", name="e.jsonl")
    with pytest.raises(ImportFileError, match="not UTF-8"):
        parse_pairs(b"\xff\xfe", name="b.jsonl")


def test_outcomes_file():
    assert parse_outcomes('{"pair_id": "p1", "outcome": "it rained"}\n', name="o.jsonl") == {"p1": "it rained"}
    with pytest.raises(ImportFileError, match=r"o\.jsonl:1: 'outcome'"):
        parse_outcomes('{"pair_id": "p1"}\n', name="o.jsonl")


def test_missing_file(tmp_path):
    with pytest.raises(ImportFileError, match="no such file"):
        read_pairs_file(tmp_path / "nope.jsonl")

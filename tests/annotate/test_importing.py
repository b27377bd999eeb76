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


def test_an_empty_completion_is_an_answer_shown_as_no_answer(tmp_path):
    """A run's pairs.jsonl holds pairs where the model said nothing (EOS first): they import, and the
    annotator sees "(no answer)" on that side, never a blank card. A missing side is still an error."""
    from rlhf_lab.annotate import queue
    from rlhf_lab.annotate.store import AnnotationStore

    rows = pair_rows(2)
    rows[1]["response_b"] = ""
    items = parse_pairs(jsonl(rows), name="pairs.jsonl")
    from rlhf_lab.data import NO_ANSWER
    assert items[1]["response_b"] == ""  # stored as said: the text is the model's, the placeholder the app's
    store = AnnotationStore(f"sqlite:///{tmp_path / 'l.sqlite'}")
    pid = store.create_project("run").id
    store.add_items(pid, items)
    ann = store.add_annotator(pid, "a").id
    with store.session() as s:
        shown = []
        for _ in items:
            nxt = queue.next_assignment(s, annotator_id=ann, project_id=pid, hints=queue.FrontierHints())
            shown.append((nxt["left"], nxt["right"]))
            queue.submit_label(s, annotator_id=ann, project_id=pid, assignment_id=nxt["assignment_id"],
                               client_id=f"c{len(shown)}", choice="left", strength=None, rationale=None,
                               time_spent_ms=5)
    store.close()
    assert sum(NO_ANSWER in pair for pair in shown) == 1 and all(all(t.strip() for t in p) for p in shown)
    with pytest.raises(ImportFileError, match=r"pairs\.jsonl:2: 'response_b' must be text"):
        parse_pairs(jsonl([rows[0], {**rows[1], "response_b": None}]), name="pairs.jsonl")


@pytest.mark.parametrize(("data", "reason"), [
    (b'{"prompt": "p", "response_a": "a", "response_b": "b"}\n\x89PNG\x00\xff', "2: not UTF-8 text"),
    ('{"prompt": "\\ud800", "response_a": "a", "response_b": "b"}', "1: text holds a lone surrogate"),
    ('{"prompt": "p", "response_a": "a", "response_b": "b", "x": ' + "[" * 200_000 + "]" * 200_000 + "}",
     "1: JSON nested too deeply"),
    ('{"pair_id": ' + "9" * 5001 + ', "prompt": "p", "response_a": "a", "response_b": "b"}', "1: not valid JSON"),
])
def test_hostile_pair_files_fail_with_file_and_line(data, reason):
    with pytest.raises(ImportFileError) as e:
        parse_pairs(data, name="h.jsonl")
    assert str(e.value).startswith(f"h.jsonl:{reason}") and "\n" not in str(e.value)


def test_line_separators_inside_strings_and_directories(tmp_path):
    row = {"pair_id": "p", "prompt": "a\u2028b", "response_a": "c\u2029d", "response_b": "e\x85f"}
    items = parse_pairs(json.dumps(row, ensure_ascii=False) + "\n", name="u.jsonl")
    assert (items[0]["prompt"], items[0]["response_b"]) == ("a\u2028b", "e\x85f")
    with pytest.raises(ImportFileError, match="is a directory"):
        read_pairs_file(tmp_path)

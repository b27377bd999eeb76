"""The `annotate` sub-commands end to end (typer's runner, real store), and the log filter of `serve`."""

from __future__ import annotations

import json
import logging

from typer.testing import CliRunner

from rlhf_lab.annotate.cli import annotate_app
from rlhf_lab.annotate.server import StripQueryFilter, _redacted, resolve_store_url
from rlhf_lab.annotate.store import AnnotationStore, url_for_run
from tests.annotate.conftest import jsonl, pair_rows

runner = CliRunner()


def test_import_then_export(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(jsonl(pair_rows(4, gold={3: "a"})))
    guide = tmp_path / "guide.md"
    guide.write_text("# Be fair")
    r = runner.invoke(annotate_app, ["import", str(pairs), "--run", str(tmp_path), "--project", "people",
                                     "--overlap", "2", "--gold-rate", "0.1", "--guidelines", str(guide)])
    assert r.exit_code == 0, r.output
    assert "Imported 4 pairs (1 gold checks)" in r.output
    store = AnnotationStore(url_for_run(tmp_path))
    p = store.project("people")
    assert (p.overlap, p.gold_rate, p.guidelines) == (2, 0.1, "# Be fair")
    a = store.add_annotator(p.id, "x")
    items = store.items(p.id)
    store.record_label(item_id=items[0].id, annotator_id=a.id, choice="b", client_id="c1", strength="much")
    store.close()
    out = tmp_path / "out"
    r = runner.invoke(annotate_app, ["export", "--run", str(tmp_path), "--project", "people", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    # a separating space: the prompt ends with a word, and TRL concatenates prompt + completion
    assert rows[0]["chosen"] == " " + items[0].response_b and rows[0]["strength"] == "much"
    assert (out / "agreement.json").is_file() and (out / "preferences_majority.parquet").is_file()


def test_import_rejects_a_malformed_file_whole(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(jsonl(pair_rows(2)) + "{oops\n")
    r = runner.invoke(annotate_app, ["import", str(bad), "--run", str(tmp_path)])
    assert r.exit_code == 2
    assert f"{bad}:3: not valid JSON" in r.output
    store = AnnotationStore(url_for_run(tmp_path))
    assert store.projects() == []
    store.close()


def test_store_url_choice_and_redaction(tmp_path):
    assert resolve_store_url(run=tmp_path).endswith("labels.sqlite")
    assert resolve_store_url(db="sqlite:///x.db") == "sqlite:///x.db"
    r = runner.invoke(annotate_app, ["export", "--run", str(tmp_path), "--db", "sqlite:///x.db"])
    assert r.exit_code != 0 and "exactly one" in r.output
    assert _redacted("postgresql+psycopg://u:secret@h/db") == "postgresql+psycopg://u:***@h/db"


def test_access_log_drops_query_strings():
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/join?token=SECRET", "1.1", 200), None)
    StripQueryFilter().filter(record)
    assert "SECRET" not in record.getMessage() and "/join" in record.getMessage()


def test_a_run_folder_named_with_url_syntax_keeps_its_store_inside(tmp_path):
    """`?`, `%` and `#` in a folder name are path characters, not a query string or an escape."""
    for name in ("run?mode=ro", "run%41x", "a#b%2Fc?d=1"):
        run = tmp_path / name
        run.mkdir()
        (run / "pairs.jsonl").write_text(jsonl(pair_rows(2, prefix=f"{len(name)}_")))
        r = runner.invoke(annotate_app, ["import", str(run / "pairs.jsonl"), "--run", str(run), "--project", "q"])
        assert r.exit_code == 0, r.output
        assert (run / "labels.sqlite").is_file()
        store = AnnotationStore(resolve_store_url(run=run))
        assert [len(store.items(p.id)) for p in store.projects()] == [2]
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a#b%2Fc?d=1", "run%41x", "run?mode=ro"]

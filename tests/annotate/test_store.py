"""The store and the queue on real databases: SQLite and (marker postgres) PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select, text

from rlhf_lab.annotate import crud, queue
from rlhf_lab.annotate.security import hash_token
from rlhf_lab.annotate.store import AnnotationStore, Assignment, Item, Label
from rlhf_lab.annotate.writer import GroupCommitWriter
from tests.annotate.conftest import pair_rows


def _items(rows):
    return [{"uid": r["pair_id"], "prompt": r["prompt"], "response_a": r["response_a"],
             "response_b": r["response_b"], "meta": r.get("meta"), "is_gold": "gold_choice" in r,
             "gold_choice": r.get("gold_choice")} for r in rows]


@pytest.fixture
def store(any_url):
    s = AnnotationStore(any_url)
    yield s
    s.close()


def _annotators(store, pid, n):
    return [store.add_annotator(pid, f"a{k}").id for k in range(n)]


def _label_all(store, pid, annotator_id, hints, *, choice="left"):
    """Label this annotator's whole queue; returns the stored item ids in order."""
    seen = []
    while True:
        with store.session() as s:
            nxt = queue.next_assignment(s, annotator_id=annotator_id, project_id=pid, hints=hints)
        if nxt is None:
            return seen
        with store.session() as s:
            _, created = queue.submit_label(s, annotator_id=annotator_id, project_id=pid,
                                            assignment_id=nxt["assignment_id"], client_id=uuid.uuid4().hex,
                                            choice=choice, strength="much", rationale=None, time_spent_ms=5)
            assert created
            seen.append(s.get(Assignment, nxt["assignment_id"]).item_id)


def test_pipeline_api_still_works(store):
    p = store.create_project("run", overlap=2, feedback_mode="hindsight")
    assert store.add_items(p.id, _items(pair_rows(3))) == 3
    a = store.add_annotator(p.id, "sim0", kind="simulated", group="detail")
    items = store.items(p.id)
    lab, created = store.record_label(item_id=items[0].id, annotator_id=a.id, choice="a", client_id="c1",
                                      strength="much", feedback_mode="hindsight")
    again, created2 = store.record_label(item_id=items[0].id, annotator_id=a.id, choice="a", client_id="c1")
    assert created and not created2 and again.id == lab.id
    rows = store.label_rows(p.id)
    assert rows[0]["annotator_group"] == "detail" and rows[0]["feedback_mode"] == "hindsight"
    assert store.label_counts(p.id) == {items[0].id: 1}


def test_add_items_is_all_or_nothing(store):
    p = store.create_project("x")
    rows = _items(pair_rows(3))
    rows.append(dict(rows[0]))  # a repeated pair id violates (project, uid) uniqueness
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError differs per database
        store.add_items(p.id, rows)
    assert store.items(p.id) == []
    with pytest.raises(Exception):  # noqa: B017
        store.create_project_with_items("y", rows)
    assert store.project("y") is None


def test_each_pair_gets_overlap_distinct_annotators_and_nobody_twice(store):
    pid = store.create_project_with_items("p", _items(pair_rows(5)), overlap=3).id
    hints = queue.FrontierHints()
    per_annotator = {a: _label_all(store, pid, a, hints) for a in _annotators(store, pid, 4)}
    for items in per_annotator.values():
        assert len(items) == len(set(items))  # nobody sees a pair twice
    with store.session() as s:
        counts = dict(s.execute(select(Label.item_id, func.count()).group_by(Label.item_id)).all())
    assert sorted(counts.values()) == [3] * 5  # every pair exactly `overlap` labels
    assert sum(len(v) for v in per_annotator.values()) == 15


def test_the_open_pair_scan_crosses_chunks_of_full_pairs(store):
    """More full pairs than one scan chunk (queue.SCAN_CHUNK) before the open ones: a process that knows no
    frontier yet still finds them, and an annotator's own open pair deep in a chunk is passed over."""
    n = 2 * queue.SCAN_CHUNK + 20
    pid = store.create_project_with_items("chunks", _items(pair_rows(n)), overlap=1).id
    a, b = _annotators(store, pid, 2)
    with store.session() as s:
        ids = s.scalars(select(Item.id).where(Item.project_id == pid).order_by(Item.id)).all()
        full = ids[:-10]
        for item_id in full:  # a labelled every pair but the last 10 (done: each holds its one slot)
            s.add(Assignment(item_id=item_id, annotator_id=a, status="done", left_is_a=True))
        s.add(Assignment(item_id=ids[-10], annotator_id=b, status="pending", left_is_a=True))
    got = []
    with store.session() as s:  # b's pending pair first, as ever
        got.append(queue.next_assignment(s, annotator_id=b, project_id=pid, hints=queue.FrontierHints()))
    with store.session() as s:
        queue.skip(s, annotator_id=b, project_id=pid, assignment_id=got[0]["assignment_id"],
                   hints=queue.FrontierHints())
    seen = _label_all(store, pid, b, queue.FrontierHints())  # a fresh process: no frontier known
    assert sorted(seen) == ids[-9:]  # the open pairs past two full chunks, less the one b skipped
    assert _label_all(store, pid, a, queue.FrontierHints()) == [ids[-10]]  # the skipped pair's slot is free again

def test_gold_items_come_at_the_configured_rate(store):
    rows = pair_rows(30, gold={i: "a" for i in range(20, 30)})  # 20 regular pairs, 10 gold checks
    pid = store.create_project_with_items("g", _items(rows), overlap=1, gold_rate=0.25).id
    (aid,) = _annotators(store, pid, 1)
    hints = queue.FrontierHints()
    seen = _label_all(store, pid, aid, hints)
    with store.session() as s:
        labelled = set(s.scalars(select(Label.item_id).join(Assignment, Assignment.id == Label.assignment_id)))
        is_gold = {it.id: it.is_gold for it in s.scalars(select(Item))}
    assert labelled == set(seen)
    first = seen[:24]  # while regular pairs last, positions follow the schedule: ⌊24·0.25⌋ or ⌈24·0.25⌉ gold
    assert sum(is_gold[i] for i in first) == 6
    assert sum(not is_gold[i] for i in seen) == 20 and len(seen) == len(set(seen))


def test_gold_turn_schedule():
    for rate in (0.1, 0.25, 1 / 3):
        for phase in (0.0, 0.37, 0.99):
            n = sum(queue.gold_turn(k, rate, phase) for k in range(60))
            assert int(60 * rate) <= n <= int(60 * rate) + 1


def test_skip_frees_the_slot_for_someone_else(store):
    pid = store.create_project_with_items("s", _items(pair_rows(1)), overlap=1).id
    a, b = _annotators(store, pid, 2)
    hints = queue.FrontierHints()
    with store.session() as s:
        first = queue.next_assignment(s, annotator_id=a, project_id=pid, hints=hints)
    with store.session() as s:
        assert queue.next_assignment(s, annotator_id=b, project_id=pid, hints=hints) is None  # slot held
    with store.session() as s:
        queue.skip(s, annotator_id=a, project_id=pid, assignment_id=first["assignment_id"], hints=hints)
    with store.session() as s:
        assert queue.next_assignment(s, annotator_id=a, project_id=pid, hints=hints) is None  # never again
    with store.session() as s:
        assert queue.next_assignment(s, annotator_id=b, project_id=pid, hints=hints) is not None


def test_label_choice_is_stored_in_a_b_terms_with_the_screen_order(store):
    pid = store.create_project_with_items("o", _items(pair_rows(40)), overlap=1).id
    (aid,) = _annotators(store, pid, 1)
    hints = queue.FrontierHints()
    _label_all(store, pid, aid, hints, choice="left")
    with store.session() as s:
        labels = list(s.scalars(select(Label)))
    assert {lab.left_is_a for lab in labels} == {True, False}  # order is drawn per assignment
    for lab in labels:  # "left" means A exactly when A was shown on the left
        assert lab.choice == ("a" if lab.left_is_a else "b")


def test_concurrent_writers_never_exceed_overlap(store):
    """Eight annotators hammer the queue through one group-commit writer, as the app does."""
    pid = store.create_project_with_items("c", _items(pair_rows(20)), overlap=3).id
    annotators = _annotators(store, pid, 8)
    hints = queue.FrontierHints()
    writer = GroupCommitWriter(store)

    def work(aid):
        while True:
            nxt = writer.submit(lambda s: queue.next_assignment(s, annotator_id=aid, project_id=pid,
                                                                hints=hints)).result(timeout=30)
            if nxt is None:
                return
            writer.submit(lambda s, n=nxt: queue.submit_label(
                s, annotator_id=aid, project_id=pid, assignment_id=n["assignment_id"], client_id=uuid.uuid4().hex,
                choice="tie", strength=None, rationale=None, time_spent_ms=None)).result(timeout=30)

    threads = [threading.Thread(target=work, args=(a,)) for a in annotators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    writer.close()
    with store.session() as s:
        counts = dict(s.execute(select(Label.item_id, func.count()).group_by(Label.item_id)).all())
        pairs = s.execute(select(Label.item_id, Label.annotator_id)).all()
    assert sorted(counts.values()) == [3] * 20
    assert len(pairs) == len(set(pairs))


def test_sessions_invites_and_admin_tokens_are_one_time_and_hashed(store):
    pid = store.create_project("inv").id
    token = crud.issue_admin_token(store)
    with store.session() as s:
        admin_session = crud.redeem_admin_token(s, token)
    with store.session() as s:
        assert crud.redeem_admin_token(s, token) is None  # one-time
        invite = crud.create_invite(s, project_id=pid, name="dana")
    with store.session() as s:
        annotator_session = crud.redeem_invite(s, invite)
    with store.session() as s:
        assert crud.redeem_invite(s, invite) is None
    with store.session() as s:
        assert crud.principal(s, hash_token(admin_session)).role == "admin"
        p = crud.principal(s, hash_token(annotator_session))
        assert (p.role, p.name, p.project_id) == ("annotator", "dana", pid)
        assert crud.principal(s, admin_session) is None  # the raw token is not what is stored
    with store.engine.connect() as conn:  # no raw token anywhere in the database
        for table in ("invites", "admin_tokens", "web_sessions"):
            for row in conn.execute(text(f"SELECT token_hash FROM {table}")):
                assert row[0] not in (token, invite, admin_session, annotator_session) and len(row[0]) == 64


@pytest.mark.postgres
def test_postgres_connections_keep_the_urls_options_and_plan_each_execution(pg_url):
    """psycopg prepares repeated statements; the store sets plan_cache_mode so PostgreSQL never swaps in a generic
    plan for the open-pair scan, and must not drop the URL's own options (here the test's search_path) doing so."""
    store = AnnotationStore(pg_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("SHOW search_path")).scalar() == pg_url.rsplit("%3D", 1)[1]
            assert conn.execute(text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"
    finally:
        store.close()

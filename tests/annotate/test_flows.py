"""The annotator's flows beyond one label, through the JSON API and the queue on a real SQLite store: "both
bad", changing one's last label (undo) without losing what was stored, the order pairs come in, and the
exact count of pairs left."""

from __future__ import annotations

import json
import uuid
from itertools import groupby

from sqlalchemy import select, text

from rlhf_lab.annotate import queue
from rlhf_lab.annotate.export import export_project
from rlhf_lab.annotate.store import AnnotationStore, Label, LabelRevision
from tests.annotate.conftest import World


def _submit(world: World, who, choice: str, strength: str | None = None, rationale: str | None = None) -> dict:
    nxt = who.get("/api/next").json()["assignment"]
    r = who.post_json("/api/labels", {"assignment_id": nxt["assignment_id"], "client_id": uuid.uuid4().hex,
                                      "choice": choice, "strength": strength, "rationale": rationale})
    assert r.status_code == 201, r.text
    return {**r.json()["label"], "shown": nxt}


def test_both_bad_is_a_tie_that_neither_side_wins_and_reaches_the_export(world, tmp_path):
    lab = _submit(world, world.alice, "both_bad", strength="much")
    _submit(world, world.alice, "tie")
    assert lab["choice"] == "both_bad" and lab["strength"] is None
    with world.store.session() as s:
        stored = s.get(Label, lab["label_id"])
        assert (stored.choice, stored.both_bad) == ("tie", True)
    assert [x["choice"] for x in world.alice.get("/api/labels").json()["labels"]] == ["tie", "both_bad"]
    export_project(world.store.label_rows(world.pid), tmp_path)
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert sorted((x["choice"], x["both_bad"]) for x in labels) == [("tie", False), ("tie", True)]
    assert (tmp_path / "preferences.jsonl").read_text() == ""  # neither is a chosen/rejected row
    report = json.loads((tmp_path / "agreement.json").read_text())
    assert (report["ties"], report["both_bad"]) == (2, 1)


def test_changing_the_last_label_keeps_every_earlier_version(world):
    first = _submit(world, world.alice, "left", "much")
    last = _submit(world, world.alice, "right", "slightly", rationale="shorter")
    shown = last["shown"]

    got = world.alice.get("/api/labels/last").json()
    assert got["label"]["label_id"] == last["label_id"] and got["label"]["choice"] == "right"
    assert (got["pair"]["prompt"], got["pair"]["left"], got["pair"]["right"]) == (
        shown["prompt"], shown["left"], shown["right"])  # as it was shown, same sides

    def revise(who, label_id: int, **body):
        return who.post_json(f"/api/labels/{label_id}/revise", body)

    assert revise(world.alice, first["label_id"], choice="tie").status_code == 409  # only the last one
    assert revise(world.bob, last["label_id"], choice="tie").status_code == 404  # bob has no label at all
    r = revise(world.alice, last["label_id"], choice="left", strength="much", rationale="on second thought")
    assert r.status_code == 200 and r.json()["changed"] and r.json()["label"]["choice"] == "left"
    assert r.json()["assignment"] is not None and r.json()["progress"]["done"] == 2
    again = revise(world.alice, last["label_id"], choice="left", strength="much", rationale="on second thought")
    assert again.status_code == 200 and not again.json()["changed"]  # a retry is applied once
    assert revise(world.alice, last["label_id"], choice="both_bad").json()["label"]["choice"] == "both_bad"

    with world.store.session() as s:
        now = s.get(Label, last["label_id"])
        versions = s.scalars(select(LabelRevision).where(LabelRevision.label_id == now.id)
                             .order_by(LabelRevision.id)).all()
        assert (now.choice, now.both_bad, now.strength) == ("tie", True, None)
        assert [(v.strength, v.rationale) for v in versions] == [("slightly", "shorter"),
                                                                 ("much", "on second thought")]
        assert versions[0].choice != versions[1].choice  # right, then left, in A/B terms
        assert versions[1].stored_at == versions[0].replaced_at
        assert s.scalar(select(Label.choice).where(Label.id == first["label_id"])) in ("a", "b")

    # once exported, a label stays as it was exported; the next one can be changed again
    world.admin.get(f"/admin/projects/{world.pid}/export.zip")
    assert revise(world.alice, last["label_id"], choice="tie").status_code == 409
    newer = _submit(world, world.alice, "left", "slightly")
    assert revise(world.alice, newer["label_id"], choice="right", strength="much").status_code == 200

    # a later sign-in (a new invite link) cannot change a label from an earlier one
    alice_again = world.join(world.invite(world.pid, "alice"))
    assert alice_again.get("/api/labels/last").status_code == 409
    assert revise(alice_again, newer["label_id"], choice="tie").status_code == 409


def _realistic(store: AnnotationStore, *, prompts: int, per_prompt: int, overlap: int, gold: int = 0,
               gold_rate: float = 0.0) -> int:
    """A project laid out as sampling writes it: each prompt's pairs next to each other in id order."""
    items = [{"uid": f"q{q}-{k}", "prompt": f"prompt {q}", "response_a": f"a{k}", "response_b": f"b{k}"}
             for q in range(prompts) for k in range(per_prompt)]
    items += [{"uid": f"g{g}", "prompt": f"gold {g}", "response_a": "yes", "response_b": "no", "is_gold": True,
               "gold_choice": "a"} for g in range(gold)]
    return store.create_project_with_items("real", items, overlap=overlap, gold_rate=gold_rate).id


def _label_round_robin(store: AnnotationStore, pid: int, names: list[str]) -> dict[str, list[str]]:
    """Annotators take turns labelling until the queue is empty; each one's prompts in the order shown."""
    ids = {n: store.add_annotator(pid, n).id for n in names}
    return _drain(store, pid, ids)


def _drain(store: AnnotationStore, pid: int, ids: dict[str, int]) -> dict[str, list[str]]:
    hints, seen, active = queue.FrontierHints(), {n: [] for n in ids}, list(ids)
    while active:
        with store.session() as s:  # one round per transaction, as the group-commit writer batches them
            for name in list(active):
                nxt = queue.next_assignment(s, annotator_id=ids[name], project_id=pid, hints=hints)
                if nxt is None:
                    active.remove(name)
                    continue
                seen[name].append(nxt["prompt"])
                queue.submit_label(s, annotator_id=ids[name], project_id=pid, assignment_id=nxt["assignment_id"],
                                   client_id=uuid.uuid4().hex, choice="left", strength="slightly", rationale=None,
                                   time_spent_ms=None)
    return seen


def test_pairs_come_in_a_per_annotator_order_without_runs_of_one_prompt(tmp_path):
    """100 prompts × 6 pairs (k=4 completions, all pairs: the default sampling), 3 labels per pair, 4
    annotators taking turns: nobody sees one prompt more than twice in a row (id order gave 6); annotators'
    orders differ; the same state gives the same order again (seeded, reproducible)."""
    runs = []
    for attempt in range(2):
        store = AnnotationStore(f"sqlite:///{tmp_path / f'{attempt}.sqlite'}")
        pid = _realistic(store, prompts=100, per_prompt=6, overlap=3)
        runs.append(_label_round_robin(store, pid, ["ann", "ben", "cat", "dan"]))
        store.close()
    seen = runs[0]
    assert sum(map(len, seen.values())) == 600 * 3
    for name, prompts in seen.items():
        # the queue's last pairs may all belong to one prompt: nothing else is left to put between them
        longest = max(len(list(g)) for _, g in groupby(prompts[:-6]))
        assert longest <= 2, (name, longest)
    assert seen["ann"][:20] != seen["ben"][:20]
    assert runs[0] == runs[1]


def test_pairs_left_is_exact(tmp_path):
    """800 assignments open: the count says 800, not "101+"; with gold checks mixed in and another
    annotator ahead, the count equals the number of pairs the queue then hands out."""
    store = AnnotationStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    pid = _realistic(store, prompts=200, per_prompt=4, overlap=1)
    ann = store.add_annotator(pid, "ann").id
    with store.session() as s:
        assert queue.progress(s, annotator_id=ann, project_id=pid, hints=queue.FrontierHints())["remaining"] == 800
    store.close()

    store = AnnotationStore(f"sqlite:///{tmp_path / 'b.sqlite'}")
    pid = _realistic(store, prompts=30, per_prompt=3, overlap=2, gold=6, gold_rate=0.15)
    _label_round_robin(store, pid, ["early"])  # a label on every pair: one slot left on each
    late = store.add_annotator(pid, "late").id
    with store.session() as s:
        promised = queue.progress(s, annotator_id=late, project_id=pid, hints=queue.FrontierHints())["remaining"]
    handed = _drain(store, pid, {"late": late})["late"]
    assert promised == len(handed) and sum(p.startswith("gold") for p in handed) > 0
    store.close()


def test_a_store_from_before_both_bad_gains_the_new_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    store = AnnotationStore(url)
    pid = _realistic(store, prompts=1, per_prompt=1, overlap=1)
    _label_round_robin(store, pid, ["ann"])
    with store.engine.begin() as conn:  # the file as an earlier version wrote it
        conn.execute(text("ALTER TABLE labels DROP COLUMN both_bad"))
        conn.execute(text("ALTER TABLE projects DROP COLUMN exported_at"))
        conn.execute(text("DROP TABLE label_revisions"))
    store.close()
    store = AnnotationStore(url)
    assert [(r["choice"] != "tie", r["both_bad"]) for r in store.label_rows(pid, export=True)] == [(True, False)]
    assert store.project(pid).exported_at is not None
    store.close()

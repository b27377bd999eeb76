"""The web app against a hostile or unlucky client: revocation, body limits before authentication, proxy
headers, out-of-range ids, one bad write in a batch, odd run folder names, stale admin tokens."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from rlhf_lab.annotate.store import Label
from tests.annotate.conftest import World


def _annotator_id(w: World, name: str) -> int:
    people = w.admin.get(f"/api/admin/projects/{w.pid}").json()["annotators"]
    return next(a["id"] for a in people if a["name"] == name)


def _labels_of(w: World, annotator_id: int) -> int:
    with w.store.session() as s:
        return s.scalar(select(func.count(Label.id)).where(Label.annotator_id == annotator_id))


def test_disabling_takes_effect_on_the_next_request_on_any_thread(world):
    """The session cache must not let a disabled annotator go on labelling for a few seconds."""
    aid = _annotator_id(world, "bob")
    pending = world.bob.get("/api/next").json()["assignment"]  # bob's session is now cached
    assert pending is not None
    before = _labels_of(world, aid)
    r = world.admin.post_form(f"/admin/projects/{world.pid}/annotators/{aid}/disable", {"disabled": "true"})
    assert r.status_code == 303
    label = {"assignment_id": pending["assignment_id"], "client_id": uuid.uuid4().hex, "choice": "tie"}
    with ThreadPoolExecutor(4) as pool:  # requests from other threads than the one that disabled bob
        codes = list(pool.map(lambda _: world.bob.get("/api/next").status_code, range(8)))
        codes.append(pool.submit(world.bob.post_json, "/api/labels", label).result().status_code)
    assert codes == [401] * 9
    assert _labels_of(world, aid) == before
    world.admin.post_form(f"/admin/projects/{world.pid}/annotators/{aid}/disable", {"disabled": "false"})
    assert world.bob.get("/api/next").status_code == 401  # disabling ended the session for good
    assert world.join(world.invite(world.pid, "bob")).get("/api/next").status_code == 200  # re-invited
    assert world.alice.get("/api/next").status_code == 200  # nobody else was touched

"""The web app against a hostile or unlucky client: revocation, body limits before authentication, proxy
headers, out-of-range ids, one bad write in a batch, odd run folder names, stale admin tokens."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import IntegrityError

from rlhf_lab.annotate.app import app_from_env
from rlhf_lab.annotate.security import CONTENT_SECURITY_POLICY
from rlhf_lab.annotate.store import AnnotationStore, Annotator, Label
from rlhf_lab.annotate.writer import GroupCommitWriter
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



def test_with_several_workers_a_disable_in_one_holds_in_the_others(world, sqlite_url, monkeypatch):
    """`serve --workers N` builds each worker's app with `app_from_env`; one cannot evict another's cache."""
    monkeypatch.setenv("RLHF_LAB_ANNOTATE_DB", sqlite_url)
    other = TestClient(app_from_env(), follow_redirects=False)  # a second worker over the same store
    other.cookies.set("rl_session", world.bob.http.cookies.get("rl_session"))
    assert other.get("/api/next").status_code == 200
    aid = _annotator_id(world, "bob")
    world.admin.post_form(f"/admin/projects/{world.pid}/annotators/{aid}/disable", {"disabled": "true"})
    assert other.get("/api/next").status_code == 401
    other.app.state.ctx.writer.close()
    other.app.state.ctx.store.close()


BOUNDARY = "rlhfboundary"


def _post_upload(app, path: str, *, session: str | None, chunks: int, chunk_size: int = 1 << 20) -> tuple[int, int]:
    """POST a multipart file upload of `chunks` chunks, chunked (no content-length), straight into the ASGI
    app; returns (status, how many chunks the server asked for)."""
    asked = 0
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()

    async def receive() -> dict:
        nonlocal asked
        if asked >= chunks:
            return {"type": "http.disconnect"}
        asked += 1
        body = (head if asked == 1 else b"") + b"x" * chunk_size
        return {"type": "http.request", "body": body, "more_body": asked < chunks}

    status = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()), (b"host", b"testserver")]
    if session:
        headers.append((b"cookie", f"rl_session={session}".encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    return status[0], asked


def test_uploads_are_refused_before_their_body_is_read_unless_the_admin_sends_them(world):
    """An anonymous client or an annotator must not make the server buffer an upload's 50 MiB."""
    alice = world.alice.http.cookies.get("rl_session")
    for path in ("/admin/projects", f"/admin/projects/{world.pid}/items", f"/admin/projects/{world.pid}/outcomes"):
        assert _post_upload(world.app, path, session=None, chunks=40) == (401, 0), path
        assert _post_upload(world.app, path, session=alice, chunks=40) == (403, 0), path
        assert _post_upload(world.app, path, session="forged-" * 5, chunks=40) == (401, 0), path


def test_the_upload_limit_holds_while_streaming_and_only_on_upload_routes(sqlite_url, tmp_path):
    w = World(sqlite_url, tmp_path, max_upload=1 << 20)
    admin = w.admin.http.cookies.get("rl_session")
    status, asked = _post_upload(w.app, "/admin/projects", session=admin, chunks=20, chunk_size=256 << 10)
    assert status == 413 and asked <= 5  # refused right after the fifth 256 KiB chunk crossed 1 MiB
    # routes that merely start like an upload route keep the ordinary 64 KiB limit
    form = {"overlap": "1", "gold_rate": "0", "feedback_mode": "foresight", "guidelines": "g" * 80_000}
    assert w.admin.post_form(f"/admin/projects/{w.pid}/settings", form).status_code == 413
    assert w.admin.post_form(f"/admin/projects/{w.pid}/invites", {"name": "n" * 70_000}).status_code == 413
    w.app.state.ctx.writer.close()


def test_a_blocked_address_still_signs_in_with_a_valid_token_and_the_block_ends(sqlite_url, tmp_path):
    """People behind one proxy share its address: a guesser there must not lock them out."""
    w = World(sqlite_url, tmp_path, sign_in_failures=3, sign_in_window_s=1.0)
    crowd = w.client()
    for _ in range(3):
        assert crowd.post_json("/api/join", {"token": "guess"}).status_code == 401
    assert crowd.post_json("/api/join", {"token": "guess"}).status_code == 429
    assert w.client().post_json("/api/join", {"token": w.invite(w.pid, "yan")}).status_code == 200
    assert w.client().post_json("/api/login", {"token": "guess"}).status_code == 429
    time.sleep(1.1)  # one window after the third failure; the refused guesses did not extend it
    assert crowd.post_json("/api/join", {"token": "guess"}).status_code == 401
    w.app.state.ctx.writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(url: str, log: Path, *args: str) -> tuple[subprocess.Popen, str, str]:
    """`rlhf-lab annotate serve` in a subprocess; returns (process, base URL, the admin token it printed)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_lab.annotate.cli", "serve", "--db", url, "--port",
                             str(port), "--no-access-log", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "COLUMNS": "200"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/csrf", timeout=1).status_code == 200:
                token = re.search(r"one-time admin token (\S+)", log.read_text()).group(1)
                return proc, base, token
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _guess(c: httpx.Client, csrf: str, forwarded_for: str) -> int:
    return c.post("/api/login", json={"token": "guess"},
                  headers={"X-CSRF-Token": csrf, "X-Forwarded-For": forwarded_for}).status_code


def test_forged_forwarded_for_does_not_dodge_the_sign_in_limit(sqlite_url, tmp_path):
    """By default no proxy is trusted: a local client cannot pose as 10 different addresses."""
    proc, base, _ = _serve(sqlite_url, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=base, timeout=10) as c:
            csrf = c.get("/api/csrf").json()["csrf_token"]
            codes = [_guess(c, csrf, f"203.0.113.{i}") for i in range(11)]
    finally:
        _stop(proc)
    assert codes == [401] * 10 + [429]


def test_a_configured_proxy_is_believed(sqlite_url, tmp_path):
    proc, base, _ = _serve(sqlite_url, tmp_path / "serve.log", "--forwarded-allow-ips", "127.0.0.1")
    try:
        with httpx.Client(base_url=base, timeout=10) as c:
            csrf = c.get("/api/csrf").json()["csrf_token"]
            guesser = [_guess(c, csrf, "203.0.113.7") for _ in range(11)]
            neighbour = _guess(c, csrf, "203.0.113.8")
    finally:
        _stop(proc)
    assert guesser == [401] * 10 + [429] and neighbour == 401


def test_one_failing_write_is_undone_alone_and_its_batch_commits_once(any_url):
    """A request whose write fails must not roll back its batch and make every neighbour commit alone."""
    store = AnnotationStore(any_url)
    writer = GroupCommitWriter(store)
    outside = create_engine(any_url)
    pid = store.create_project("p").id
    store.add_annotator(pid, "taken")
    commits = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    gate = threading.Event()
    blocker = writer.submit(lambda s: (s.execute(select(1)), gate.wait(10))[1])  # holds the writer meanwhile
    while writer.batches < 1:
        time.sleep(0.001)

    def add(name: str, *, then_fail: bool = False):
        def op(s):
            s.add(Annotator(project_id=pid, name=name))
            s.flush()
            if then_fail:  # a second write that breaks a unique constraint, after a first that worked
                s.add(Annotator(project_id=pid, name="taken"))
                s.flush()
            with outside.connect() as c:  # nothing of the batch may be visible before its one commit
                return c.scalar(select(func.count(Annotator.id)).where(Annotator.name.like("a%")))
        return op

    bad = {2, 6}
    futures = [writer.submit(add(f"a{i}", then_fail=i in bad)) for i in range(9)]
    gate.set()
    assert blocker.result(10) is True
    for i, fut in enumerate(futures):
        if i in bad:
            assert isinstance(fut.exception(10), IntegrityError)
        else:
            assert fut.result(10) == 0, f"the batch was committed before write {i}"
    assert writer.batches == 2 and len(commits) == 2  # the blocker's batch, then all nine in one
    names = {a.name for a in store.annotators(pid)}
    assert names == {"taken"} | {f"a{i}" for i in range(9) if i not in bad}
    writer.close()
    store.close()
    outside.dispose()


def _has_security_headers(r) -> bool:
    return (r.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY
            and r.headers.get("x-frame-options") == "DENY" and r.headers.get("x-content-type-options") == "nosniff")


def test_out_of_range_ids_are_refused_at_the_edge(world):
    huge, aid = "99999999999999999999", _annotator_id(world, "alice")
    for path in (f"/api/admin/projects/{huge}", f"/api/admin/projects/{huge}/labels", f"/admin/projects/{huge}",
                 f"/admin/projects/{huge}/export.zip", f"/api/admin/projects/{2**31}", "/api/admin/projects/0"):
        r = world.admin.get(path)
        assert r.status_code == 422 and _has_security_headers(r), (path, r.status_code)
    r = world.admin.post_form(f"/admin/projects/{world.pid}/annotators/{2**63}/disable", {"disabled": "true"})
    assert r.status_code == 422 and _has_security_headers(r)
    r = world.admin.post_form(f"/admin/projects/{huge}/invites", {"name": "x"})
    assert r.status_code == 422 and _has_security_headers(r)
    for big in (2**63, 2**31, 2**64 + 1, -1):
        label = {"assignment_id": big, "client_id": uuid.uuid4().hex, "choice": "tie"}
        skip = {"assignment_id": big}
        for r in (world.alice.post_json("/api/labels", label), world.alice.post_json("/api/skip", skip)):
            assert r.status_code == 422 and "assignment_id" in r.text and _has_security_headers(r), big
    assert world.admin.post_form(f"/admin/projects/{world.pid}/annotators/{aid}/disable",
                                 {"disabled": "false"}).status_code == 303


def test_an_internal_error_still_carries_the_security_headers(world):
    with world.store.engine.begin() as conn:  # a broken store: every label query fails
        conn.execute(text("DROP TABLE labels"))
    # a client that receives the server error instead of raising it
    admin = TestClient(world.app, raise_server_exceptions=False, cookies=dict(world.admin.http.cookies))
    r = admin.get(f"/api/admin/projects/{world.pid}/labels")
    assert r.status_code == 500 and _has_security_headers(r) and "internal error" in r.json()["detail"]


def test_a_restart_voids_the_admin_token_printed_before(sqlite_url, tmp_path):
    proc, _, first = _serve(sqlite_url, tmp_path / "first.log")
    _stop(proc)
    proc, base, second = _serve(sqlite_url, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=base, timeout=10) as c:
            csrf = {"X-CSRF-Token": c.get("/api/csrf").json()["csrf_token"]}
            stale = c.post("/api/login", json={"token": first}, headers=csrf).status_code
            fresh = c.post("/api/login", json={"token": second}, headers=csrf).status_code
    finally:
        _stop(proc)
    assert (stale, fresh) == (401, 200)

"""SIGKILL under load: the server is a real uvicorn subprocess on loopback; 20 annotators submit labels
from threads; the server is killed mid-load and restarted; every acknowledged label must be stored exactly
once (clients retry unacknowledged submissions with the same client id). The server's output must hold
no invite or session token."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
from sqlalchemy import func, select

from rlhf_lab.annotate import crud
from rlhf_lab.annotate.store import AnnotationStore, Label

N_ANNOTATORS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(url: str, port: int, log) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_lab.annotate.cli", "serve", "--db", url, "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/csrf", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def _wait_for_acks(people, n: int, timeout_s: float = 20.0) -> None:
    """Until the annotators together have `n` acknowledged labels (bounded in time)."""
    deadline = time.monotonic() + timeout_s
    while sum(len(p.acked) for p in people) < n and time.monotonic() < deadline:
        time.sleep(0.05)


class Annotator(threading.Thread):
    def __init__(self, base: str, token: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.base, self.token, self.stop = base, token, stop
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.cookies: list[str] = []

    def _retrying(self, fn):
        while not self.stop.is_set():
            try:
                r = fn()
            except httpx.TransportError:  # the server is down: try again, same request
                time.sleep(0.05)
                continue
            if r.status_code >= 500:
                time.sleep(0.05)
                continue
            return r
        return None

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as c:
            csrf = c.get("/api/csrf").json()["csrf_token"]
            headers = {"X-CSRF-Token": csrf}
            if c.post("/api/join", json={"token": self.token}, headers=headers).status_code != 200:
                self.errors.append("join failed")
                return
            self.cookies = list(c.cookies.values())
            r = self._retrying(lambda: c.get("/api/next"))
            assignment = r.json()["assignment"] if r is not None else None
            while assignment is not None and not self.stop.is_set():
                body = {"assignment_id": assignment["assignment_id"], "client_id": uuid.uuid4().hex,
                        "choice": "left", "strength": "much", "time_spent_ms": 10}
                r = self._retrying(lambda b=body: c.post("/api/labels", json=b, headers=headers))
                if r is None:
                    return
                if r.status_code not in (200, 201):
                    self.errors.append(f"{r.status_code} {r.text}")
                    return
                self.acked.append(body["client_id"])
                assignment = r.json()["assignment"]


def test_sigkill_under_load_loses_no_acknowledged_label(any_url, tmp_path):
    url = any_url
    store = AnnotationStore(url)
    items = [{"uid": f"p{i}", "prompt": f"q{i}", "response_a": "a", "response_b": "b"} for i in range(2000)]
    pid = store.create_project_with_items("durable", items, overlap=2).id
    with store.session() as s:
        tokens = [crud.create_invite(s, project_id=pid, name=f"a{k}") for k in range(N_ANNOTATORS)]
    store.close()

    port = _free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = _start(url, port, log)
        stop = threading.Event()
        people = [Annotator(f"http://127.0.0.1:{port}", t, stop) for t in tokens]
        for p in people:
            p.start()
        _wait_for_acks(people, 60)
        acked_before_kill = sum(len(p.acked) for p in people)
        server.send_signal(signal.SIGKILL)  # 1. killed mid-load, no chance to flush anything
        server.wait(timeout=10)
        server = _start(url, port, log)  # 2. restarted; clients retry what was not acknowledged
        _wait_for_acks(people, acked_before_kill + 60)
        stop.set()
        for p in people:
            p.join(timeout=30)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    acked = [cid for p in people for cid in p.acked]
    assert not [e for p in people for e in p.errors]
    assert acked_before_kill >= 60 and len(acked) >= acked_before_kill + 60  # load before the kill and after
    store = AnnotationStore(url)
    with store.session() as s:
        stored = dict(s.execute(select(Label.client_id, func.count()).group_by(Label.client_id)).all())
        pairs = s.execute(select(Label.item_id, Label.annotator_id)).all()
        per_item = s.execute(select(func.count()).select_from(Label).group_by(Label.item_id)).scalars().all()
    store.close()
    missing = [cid for cid in acked if cid not in stored]
    assert missing == [], f"{len(missing)} acknowledged labels lost"
    assert all(stored[cid] == 1 for cid in acked)  # exactly once
    assert len(acked) == len(set(acked)) and len(pairs) == len(set(pairs))
    assert max(per_item) <= 2  # overlap held through the crash

    # 3. no token in the server's output (the admin token that serve prints is the one allowed)
    text = log_path.read_text(errors="replace")
    assert "POST /api/labels" in text  # the access log was on
    for p in people:
        assert p.token not in text
        for value in p.cookies:
            assert value not in text

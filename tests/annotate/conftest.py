"""Shared fixtures of the annotation app's tests: stores (SQLite, and PostgreSQL when
RLHF_LAB_TEST_PG_URL is set), an app with a project, and signed-in clients for each role."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from rlhf_lab.annotate import crud
from rlhf_lab.annotate.app import create_app

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"
PG_URL = os.environ.get("RLHF_LAB_TEST_PG_URL")


def pair_rows(n: int, *, prefix: str = "p", gold: dict[int, str] | None = None) -> list[dict]:
    """n pairs; the first one carries both XSS payloads in model text."""
    gold = gold or {}
    rows = []
    for i in range(n):
        row = {"pair_id": f"{prefix}{i}", "prompt": f"what is {i} plus {i} ?",
               "response_a": f"{2 * i} .", "response_b": f"i think {2 * i + 1} .", "meta": {"family": "question"}}
        if i == 0:
            row.update(prompt=f"question {XSS_SCRIPT}", response_a=f"answer {XSS_IMG}")
        if i in gold:
            row["gold_choice"] = gold[i]
        rows.append(row)
    return rows


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'labels.sqlite'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a fresh schema, dropped afterwards."""
    if not PG_URL:
        pytest.skip("RLHF_LAB_TEST_PG_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request) -> str:
    """Each store test runs on SQLite and (marker postgres) on the real PostgreSQL server."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


class Client:
    """A TestClient plus the CSRF token its cookie carries."""

    def __init__(self, app, *, https: bool = False):
        base = "https://testserver" if https else "http://testserver"  # Secure cookies travel over HTTPS only
        self.http = TestClient(app, base_url=base, follow_redirects=False)
        self.csrf = self.http.get("/api/csrf").json()["csrf_token"]

    def get(self, path: str, **kw):
        return self.http.get(path, **kw)

    def post_json(self, path: str, body: dict, *, csrf: bool = True):
        return self.http.post(path, json=body, headers={"X-CSRF-Token": self.csrf} if csrf else {})

    def post_form(self, path: str, data: dict | None = None, *, files=None, csrf: bool = True):
        data = dict(data or {})
        if csrf:
            data["csrf_token"] = self.csrf
        return self.http.post(path, data=data, files=files)


class World:
    """An app with one project of 6 pairs (overlap 2), two annotators of it and one of a second project."""

    def __init__(self, url: str, tmp_path, **app_kw):
        self.app = create_app(url, run_dir=tmp_path, **app_kw)
        self.https = bool(app_kw.get("secure_cookies"))
        self.store = self.app.state.ctx.store
        self.admin = self.client()
        assert self.admin.post_json("/api/login", {"token": crud.issue_admin_token(self.store)}).status_code == 200
        self.pid = self.create_project("main", pair_rows(6), overlap=2)
        self.other_pid = self.create_project("other", pair_rows(3, prefix="o"))
        self.alice = self.join(self.invite(self.pid, "alice"))
        self.bob = self.join(self.invite(self.pid, "bob"))
        self.carol = self.join(self.invite(self.other_pid, "carol"))

    def client(self) -> Client:
        return Client(self.app, https=self.https)

    def create_project(self, name: str, rows: list[dict], **form) -> int:
        r = self.admin.post_form("/admin/projects", {"name": name, "source": "upload", **form},
                                 files={"file": ("pairs.jsonl", jsonl(rows))})
        assert r.status_code == 303, r.text
        return int(r.headers["location"].rsplit("/", 1)[1])

    def invite(self, pid: int, name: str) -> str:
        r = self.admin.post_form(f"/admin/projects/{pid}/invites", {"name": name})
        assert r.status_code == 200, r.text
        return re.search(r"/join#([A-Za-z0-9_-]+)", r.text).group(1)

    def join(self, token: str) -> Client:
        c = self.client()
        assert c.post_json("/api/join", {"token": token}).status_code == 200
        return c

    def label(self, who: Client, choice: str = "left", strength: str | None = "slightly") -> dict:
        nxt = who.get("/api/next").json()["assignment"]
        r = who.post_json("/api/labels", {"assignment_id": nxt["assignment_id"], "client_id": uuid.uuid4().hex,
                                          "choice": choice, "strength": strength, "time_spent_ms": 1200})
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def world(sqlite_url, tmp_path) -> Iterator[World]:
    w = World(sqlite_url, tmp_path)
    yield w
    w.app.state.ctx.writer.close()
    w.store.close()


# Browser tests (test_browser*.py): Debian's chromium, headless, offline.
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def expect(locator):
    return pytest.importorskip("playwright.sync_api").expect(locator)


@contextmanager
def live(app) -> Iterator[str]:
    """The app under uvicorn on a free loopback port; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        app.state.ctx.writer.close()
        app.state.ctx.store.close()

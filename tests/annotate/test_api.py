"""Every route of the app through FastAPI's TestClient: who may do what, CSRF, XSS, limits, export."""

from __future__ import annotations

import html
import io
import json
import re
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
from starlette.routing import Mount

import rlhf_lab.annotate.app
from rlhf_lab.annotate import crud
from rlhf_lab.annotate.security import CONTENT_SECURITY_POLICY
from tests.annotate.conftest import XSS_IMG, XSS_SCRIPT, World, jsonl, pair_rows


def _routes(w: World) -> list[tuple[str, str, dict]]:
    """(method, path, request kwargs) for every route, and who may call it."""
    people = w.admin.get(f"/api/admin/projects/{w.pid}").json()["annotators"]
    aid = next(a["id"] for a in people if a["name"] == "alice")
    upload = {"files": {"file": ("more.jsonl", jsonl(pair_rows(1, prefix="m")))}}
    more = jsonl(pair_rows(1, prefix=uuid.uuid4().hex))
    outcome = '{"pair_id": "p1", "outcome": "ok"}'
    return [
        # role "annotator"
        ("GET", "/label", {}), ("GET", "/guidelines", {}), ("GET", "/profile", {}),
        ("POST", "/profile", {"form": {"group": "teachers", "consent": "true"}}),
        ("GET", "/api/next", {}), ("GET", "/api/progress", {}), ("GET", "/api/labels", {}), ("GET", "/api/me", {}),
        ("POST", "/api/labels", {"label": True}), ("POST", "/api/skip", {"skip": True}),
        ("GET", "/api/labels/last", {}), ("POST", "/api/labels/{label_id}/revise", {"revise": True}),
        # role "admin"
        ("GET", "/admin", {}), ("GET", f"/admin/projects/{w.pid}", {}),
        ("POST", "/admin/projects", {"form": {"name": f"n{uuid.uuid4().hex[:6]}"}, **upload}),
        ("POST", f"/admin/projects/{w.pid}/settings", {"form": {"overlap": "2", "gold_rate": "0", "feedback_mode":
                                                                "foresight", "guidelines": "be kind"}}),
        ("POST", f"/admin/projects/{w.pid}/items", {"files": {"file": ("x.jsonl", more)}}),
        ("POST", f"/admin/projects/{w.pid}/outcomes", {"files": {"file": ("o.jsonl", outcome)}}),
        ("POST", f"/admin/projects/{w.pid}/invites", {"form": {"name": "erin"}}),
        ("POST", f"/admin/projects/{w.pid}/annotators/{aid}/disable", {"form": {"disabled": "false"}}),
        ("GET", f"/admin/projects/{w.pid}/export.zip", {}), ("GET", f"/admin/projects/{w.pid}/labels", {}),
        ("POST", f"/admin/projects/{w.pid}/export-to-run", {}),
        ("GET", "/api/admin/projects", {}), ("GET", f"/api/admin/projects/{w.pid}", {}),
        ("GET", f"/api/admin/projects/{w.pid}/labels", {}),
    ]


ANNOTATOR_ROUTES = 12
PUBLIC = {("GET", "/"), ("GET", "/login"), ("GET", "/join"), ("GET", "/api/csrf"), ("POST", "/login"),
          ("POST", "/api/login"), ("POST", "/join"), ("POST", "/api/join"), ("POST", "/logout")}


def _call(w: World, who, method: str, path: str, kw: dict, *, csrf: bool = True):
    if method == "GET":
        return who.get(path)
    if kw.get("revise"):  # alice's own last label (any id when she has none: refused before it is read)
        mine = w.alice.get("/api/labels/last")
        last = mine.json()["label"]["label_id"] if mine.status_code == 200 else 1
        return who.post_json(path.format(label_id=last), {"choice": "left", "strength": "much"}, csrf=csrf)
    if kw.get("label") or kw.get("skip"):
        nxt = w.alice.get("/api/next").json()["assignment"]  # alice's own pending pair
        body = {"assignment_id": nxt["assignment_id"]}
        if kw.get("label"):
            body.update(client_id=uuid.uuid4().hex, choice="tie")
        return who.post_json(path, body, csrf=csrf)
    return who.post_form(path, kw.get("form"), files=kw.get("files"), csrf=csrf)


def _app_routes(app):
    for route in app.routes:
        if isinstance(route, Mount):  # /static
            continue
        yield from getattr(route, "original_router", route).routes  # included routers (FastAPI ≥ 0.16x)


def test_every_route_is_in_the_matrix(world):
    covered = {(m, p.replace(str(world.pid), "{pid}")) for m, p, _ in _routes(world)} | PUBLIC
    routes = list(_app_routes(world.app))
    assert len(routes) > 30
    for route in routes:
        for method in route.methods - {"HEAD"}:
            path = route.path.replace("{aid}", "X")
            assert any(m == method and p.split("/annotators/")[0] == path.split("/annotators/")[0]
                       for m, p in covered), f"{method} {route.path} is not in the authorisation matrix"


def test_authorisation_matrix(world):
    """anonymous → 401; the wrong role → 403; the right role → success."""
    anonymous = world.client()
    for i, (method, path, kw) in enumerate(_routes(world)):
        role_ok = world.alice if i < ANNOTATOR_ROUTES else world.admin
        role_wrong = world.admin if i < ANNOTATOR_ROUTES else world.alice
        assert _call(world, anonymous, method, path, kw).status_code == 401, f"anonymous {method} {path}"
        assert _call(world, role_wrong, method, path, kw).status_code == 403, f"wrong role {method} {path}"
        if i >= ANNOTATOR_ROUTES:  # another project's annotator is still not an admin
            assert _call(world, world.carol, method, path, kw).status_code == 403
        r = _call(world, role_ok, method, path, kw)
        assert r.status_code in (200, 201, 303), f"{method} {path}: {r.status_code} {r.text[:200]}"


def test_every_post_needs_the_csrf_token(world):
    for i, (method, path, kw) in enumerate(_routes(world)):
        if method != "POST":
            continue
        who = world.alice if i < ANNOTATOR_ROUTES else world.admin
        r = _call(world, who, method, path, kw, csrf=False)
        assert r.status_code == 403 and "CSRF" in r.text, f"{path} accepted a POST without CSRF token"
    wrong = world.alice.http.post("/api/skip", json={"assignment_id": 1}, headers={"X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403
    for path in ("/login", "/join"):
        assert world.client().post_form(path, {"token": "t"}, csrf=False).status_code == 403
    assert world.client().post_json("/api/join", {"token": "t"}, csrf=False).status_code == 403
    assert world.alice.post_form("/logout", csrf=False).status_code == 403


def test_model_text_is_escaped_and_csp_is_strict(world):
    r = world.alice.get("/label")  # the first pair carries both payloads
    assert r.status_code == 200
    assert XSS_SCRIPT not in r.text and XSS_IMG not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text and "&lt;img src=x onerror=alert(1)&gt;" in r.text
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert "<script>" not in r.text.replace('<script src="/static/label.js" defer></script>', "")  # no inline JS
    api = world.alice.get("/api/next").json()["assignment"]  # JSON carries the raw text; label.js uses textContent
    assert XSS_SCRIPT in api["prompt"]


def test_guidelines_markdown_is_rendered_safely(world):
    md = f"# Be careful\n\n{XSS_SCRIPT}\n\n[click](javascript:alert(1)) **bold**"
    world.admin.post_form(f"/admin/projects/{world.pid}/settings",
                          {"overlap": "2", "gold_rate": "0", "feedback_mode": "foresight", "guidelines": md})
    page = world.alice.get("/guidelines").text
    assert "<h1>Be careful</h1>" in page and "<strong>bold</strong>" in page
    assert XSS_SCRIPT not in page and 'href="javascript:' not in page


def test_annotator_names_are_escaped_on_the_dashboard(world):
    world.invite(world.pid, XSS_IMG)
    page = world.admin.get(f"/admin/projects/{world.pid}").text
    assert XSS_IMG not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_retried_submit_is_stored_once_and_other_annotators_cannot_touch_it(world):
    nxt = world.alice.get("/api/next").json()["assignment"]
    body = {"assignment_id": nxt["assignment_id"], "client_id": uuid.uuid4().hex, "choice": "right",
            "strength": "much", "rationale": "clearer", "time_spent_ms": 4000}
    first = world.alice.post_json("/api/labels", body)
    again = world.alice.post_json("/api/labels", body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["label"]["label_id"] == first.json()["label"]["label_id"] and not again.json()["created"]
    assert len(world.store.label_rows(world.pid)) == 1
    # bob may neither reuse alice's client id, nor label or skip her assignment, nor read her labels
    assert world.bob.post_json("/api/labels", body).status_code == 409
    assert world.bob.post_json("/api/labels", {**body, "client_id": uuid.uuid4().hex}).status_code == 404
    assert world.bob.post_json("/api/skip", {"assignment_id": nxt["assignment_id"]}).status_code == 404
    assert world.bob.get("/api/labels").json()["labels"] == []
    assert len(world.alice.get("/api/labels").json()["labels"]) == 1
    # a second label for the same assignment with a fresh id is refused
    assert world.alice.post_json("/api/labels", {**body, "client_id": uuid.uuid4().hex}).status_code == 409


def test_label_validation(world):
    nxt = world.alice.get("/api/next").json()["assignment"]
    base = {"assignment_id": nxt["assignment_id"], "client_id": uuid.uuid4().hex}
    assert world.alice.post_json("/api/labels", {**base, "choice": "a"}).status_code == 422
    assert world.alice.post_json("/api/labels", {**base, "choice": "left", "strength": "huge"}).status_code == 422
    assert world.alice.post_json("/api/labels", {**base, "choice": "left", "time_spent_ms": -1}).status_code == 422


def test_queue_progress_and_skip(world):
    start = world.alice.get("/api/next").json()
    assert start["progress"] == {"done": 0, "skipped": 0, "remaining": 6}
    out = world.label(world.alice)
    assert out["progress"]["done"] == 1 and out["assignment"] is not None
    skipped = world.alice.post_json("/api/skip", {"assignment_id": out["assignment"]["assignment_id"]}).json()
    assert skipped["progress"]["skipped"] == 1
    retried = world.alice.post_json("/api/skip", {"assignment_id": out["assignment"]["assignment_id"]}).json()
    assert retried["assignment"] == skipped["assignment"]  # a retried skip reserves nothing new
    assert world.alice.get("/api/progress").json()["remaining"] == 4
    for _ in range(4):
        last = world.label(world.alice)
    assert last["assignment"] is None  # queue empty: 6 pairs, one labelled... all but the skipped one


def test_hindsight_reveals_the_outcome_and_labels_record_the_mode(world):
    world.admin.post_form(f"/admin/projects/{world.pid}/outcomes",
                          files={"file": ("o.jsonl", jsonl([{"pair_id": f"p{i}", "outcome": f"result {i}"}
                                                            for i in range(6)]))})
    assert world.alice.get("/api/next").json()["assignment"]["outcome"] is None  # foresight: hidden
    world.admin.post_form(f"/admin/projects/{world.pid}/settings",
                          {"overlap": "2", "gold_rate": "0", "feedback_mode": "hindsight"})
    nxt = world.alice.get("/api/next").json()["assignment"]
    assert nxt["outcome"].startswith("result ")
    assert "result " in world.alice.get("/label").text
    world.label(world.alice)
    assert world.store.label_rows(world.pid)[0]["feedback_mode"] == "hindsight"


def test_unknown_outcome_pair_rejects_the_file(world):
    r = world.admin.post_form(f"/admin/projects/{world.pid}/outcomes",
                              files={"file": ("o.jsonl", '{"pair_id": "p1", "outcome": "x"}\n'
                                                         '{"pair_id": "nope", "outcome": "y"}\n')})
    assert r.status_code == 400 and "nope" in r.text
    assert all(it.outcome is None for it in world.store.items(world.pid))


def test_malformed_upload_is_rejected_with_line_and_nothing_imported(world):
    bad = jsonl(pair_rows(2)) + '{"prompt": "p", "response_a": "a"}\n'
    r = world.admin.post_form("/admin/projects", {"name": "bad"}, files={"file": ("bad.jsonl", bad)})
    assert r.status_code == 400 and "bad.jsonl:3: 'response_b' must be text" in html.unescape(r.text)
    assert world.store.project("bad") is None
    dup = world.admin.post_form(f"/admin/projects/{world.pid}/items", files={"file": ("d.jsonl", jsonl(pair_rows(2)))})
    assert dup.status_code == 409 and len(world.store.items(world.pid)) == 6
    same_name = world.admin.post_form("/admin/projects", {"name": "main"},
                                      files={"file": ("p.jsonl", jsonl(pair_rows(1)))})
    assert same_name.status_code == 409


def test_project_from_the_run_folder(world, tmp_path):
    (tmp_path / "pairs.jsonl").write_text(jsonl(pair_rows(4, prefix="r")))
    assert "pairs.jsonl" in world.admin.get("/admin").text
    r = world.admin.post_form("/admin/projects", {"name": "run", "source": "run", "overlap": "3"})
    assert r.status_code == 303
    p = world.store.project("run")
    assert p.overlap == 3 and [it.uid for it in world.store.items(p.id)] == ["r0", "r1", "r2", "r3"]


def test_gold_checks_and_dashboard_agreement(world):
    pid = world.create_project("gold", pair_rows(8, gold={6: "a", 7: "a"}), overlap=2, gold_rate="0.5")
    people = [world.join(world.invite(pid, name)) for name in ("g1", "g2")]
    for who in people:
        while (nxt := who.get("/api/next").json()["assignment"]) is not None:
            # everyone picks stored response A (screen side depends on the drawn order)
            side = "right" if nxt["left"].startswith("i think") else "left"  # response B starts "i think"
            who.post_json("/api/labels", {"assignment_id": nxt["assignment_id"], "client_id": uuid.uuid4().hex,
                                          "choice": side, "strength": "much"})
    view = world.admin.get(f"/api/admin/projects/{pid}").json()
    assert view["progress"]["complete_items"] == 6 and view["progress"]["gold_items"] == 2
    assert {a["name"]: (a["gold_rate"], a["gold_n"]) for a in view["annotators"]} == {"g1": (1.0, 2), "g2": (1.0, 2)}
    assert view["agreement"]["mean_pairwise_kappa"] is None  # everyone chose A: κ undefined (p_e = 1)
    page = world.admin.get(f"/admin/projects/{pid}").text
    assert "Krippendorff" in page and "100 %" in page


def test_export_zip_has_trl_columns_majority_and_agreement(world):
    world.alice.post_form("/profile", {"group": "teachers", "consent": "true"})
    world.bob.post_form("/profile", {"group": "nurses"})  # no consent: nothing stored
    for _ in range(3):
        world.label(world.alice, "left", "much")
        world.label(world.bob, "right", "slightly")
    r = world.admin.get(f"/admin/projects/{world.pid}/export.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert {"preferences.parquet", "preferences.jsonl", "preferences_majority.parquet", "preferences_majority.jsonl",
            "labels.jsonl", "agreement.json"} <= set(z.namelist())
    rows = [json.loads(line) for line in z.read("preferences.jsonl").decode().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert {"prompt", "chosen", "rejected", "annotator_id", "annotator_group", "strength", "time_spent_ms",
                "left_is_a", "feedback_mode"} <= row.keys()
        assert row["time_spent_ms"] == 1200
    groups = {row["annotator_id"]: row["annotator_group"] for row in rows}
    assert groups == {"alice": "teachers", "bob": None}
    agree = json.loads(z.read("agreement.json"))
    assert {"krippendorff_alpha", "mean_pairwise_kappa", "pairwise_kappa", "majority_agreement"} <= agree.keys()
    world.admin.post_form(f"/admin/projects/{world.pid}/export-to-run")
    assert (world.app.state.ctx.run_dir / "preferences.parquet").is_file()


def test_invites_are_one_time_and_rate_limited(sqlite_url, tmp_path):
    w = World(sqlite_url, tmp_path, sign_in_failures=3)
    token = w.invite(w.pid, "zoe")
    w.join(token)
    stranger = w.client()
    assert stranger.post_json("/api/join", {"token": token}).status_code == 401  # used
    assert stranger.post_json("/api/join", {"token": "guess"}).status_code == 401
    assert stranger.post_json("/api/login", {"token": "guess"}).status_code == 401
    assert stranger.post_json("/api/join", {"token": "guess"}).status_code == 429  # 3 failures
    w.app.state.ctx.writer.close()


def test_html_sign_in_and_out(world):
    c = world.client()
    r = c.post_form("/join", {"token": world.invite(world.pid, "hal")})
    assert r.status_code == 303 and r.headers["location"] == "/label"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert c.get("/").headers["location"] == "/label"
    assert c.post_form("/logout").status_code == 303
    assert c.get("/label").status_code == 401
    admin = world.client()
    assert admin.post_form("/login", {"token": crud.issue_admin_token(world.store)}).headers["location"] == "/admin"
    assert admin.get("/").headers["location"] == "/admin"
    assert world.client().get("/").headers["location"] == "/login"
    assert "Please sign in" in world.client().get("/label").text


def test_secure_cookie_flag_is_configurable(sqlite_url, tmp_path):
    w = World(sqlite_url, tmp_path, secure_cookies=True)
    r = w.client().post_form("/join", {"token": w.invite(w.pid, "sec")})
    assert "Secure" in r.headers["set-cookie"]
    w.app.state.ctx.writer.close()


def test_disabled_annotator_is_signed_out(world):
    aid = next(a["id"] for a in world.admin.get(f"/api/admin/projects/{world.pid}").json()["annotators"]
               if a["name"] == "bob")
    world.admin.post_form(f"/admin/projects/{world.pid}/annotators/{aid}/disable", {"disabled": "true"})
    assert world.bob.get("/api/next").status_code == 401


def test_request_size_limit(world):
    huge = {"assignment_id": 1, "client_id": uuid.uuid4().hex, "choice": "tie", "rationale": "x" * 100_000}
    assert world.alice.post_json("/api/labels", huge).status_code == 413
    chunked = world.alice.http.post("/api/skip", content=iter([b"{" + b" " * 70_000 + b"}"]),
                                    headers={"X-CSRF-Token": world.alice.csrf, "content-type": "application/json"})
    assert chunked.status_code == 413


@pytest.mark.parametrize("path", ["/static/app.css", "/static/label.js", "/static/token.js"])
def test_static_files_are_served_locally(world, path):
    r = world.client().get(path)
    assert r.status_code == 200 and r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_pages_load_nothing_from_elsewhere():
    """No CDN: every stylesheet and script is under /static, so the app works offline."""
    here = Path(rlhf_lab.annotate.app.__file__).parent
    for path in [*here.glob("templates/*.html"), *here.glob("static/*")]:
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text, path
        assert not re.search(r"<script>|\son\w+=", text), f"inline script or handler in {path}"


def test_web_app_imports_no_torch_or_training_code():
    code = ("import sys, rlhf_lab.annotate.app, rlhf_lab.annotate.cli, rlhf_lab.annotate.server; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('rlhf_lab.steps', 'rlhf_lab.models', "
            "'rlhf_lab.world'))]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr

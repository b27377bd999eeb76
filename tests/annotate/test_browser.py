"""The app in a real browser (Playwright driving Debian's headless Chromium): an annotator joins through an
invite link and labels three pairs with the keyboard; the admin sees agreement and exports. Any console
error — a Content-Security-Policy violation shows up as one — fails the test."""

from __future__ import annotations

import io
import uuid
import zipfile
from pathlib import Path

import pytest

from rlhf_lab.annotate import crud, queue
from rlhf_lab.annotate.app import create_app
from tests.annotate.conftest import CHROMIUM, XSS_IMG, XSS_SCRIPT, expect, live, pair_rows

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")]


@pytest.fixture
def server(sqlite_url, tmp_path):
    """The app under uvicorn on a free loopback port, with a project that bob has already labelled."""
    app = create_app(sqlite_url, run_dir=tmp_path)
    store = app.state.ctx.store
    items = [{"uid": r["pair_id"], "prompt": r["prompt"], "response_a": r["response_a"],
              "response_b": r["response_b"]} for r in pair_rows(4)]
    guide = "# Rules\n\nPrefer **true** answers."
    pid = store.create_project_with_items("browser", items, overlap=2, guidelines=guide).id
    with store.session() as s:
        invite = crud.create_invite(s, project_id=pid, name="alice")
        bob = crud.create_invite(s, project_id=pid, name="bob") and s.scalar(
            crud.select(crud.Annotator.id).where(crud.Annotator.name == "bob"))
    hints = queue.FrontierHints()
    for _ in range(3):
        with store.session() as s:
            nxt = queue.next_assignment(s, annotator_id=bob, project_id=pid, hints=hints)
            queue.submit_label(s, annotator_id=bob, project_id=pid, assignment_id=nxt["assignment_id"],
                               client_id=uuid.uuid4().hex, choice="left", strength="much", rationale=None,
                               time_spent_ms=900)
    with live(app) as base:
        yield {"base": base, "invite": invite, "admin": crud.issue_admin_token(store), "pid": pid}




def _watch(page, errors: list[str]) -> None:
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))


def test_annotator_labels_with_the_keyboard_and_admin_exports(server, browser):
    errors: list[str] = []
    base = server["base"]

    # 1. the annotator opens the invite link: the token (after '#') is posted, never put in a URL
    page = browser.new_context().new_page()
    _watch(page, errors)
    page.goto(f"{base}/join#{server['invite']}")
    page.wait_for_url(f"{base}/label")
    assert page.text_content("#progress-done") == "0"
    texts = page.text_content("#prompt") + page.text_content("#left") + page.text_content("#right")
    assert XSS_SCRIPT in texts and XSS_IMG in texts  # shown as text, not run

    # 2. guidelines one key away
    page.keyboard.press("g")
    assert page.is_visible("#guidelines-dialog") and "Prefer" in page.text_content("#guidelines-dialog")
    page.keyboard.press("Escape")
    assert not page.is_visible("#guidelines-dialog")

    # 3. three labels, keyboard only: left much, right slightly (with a rationale), tie
    for n, keys in enumerate([["1", "m"], ["ArrowRight", "s", "r"], ["t"]], start=1):
        before = page.text_content("#prompt")
        for key in keys:
            page.keyboard.press(key)
        if "r" in keys:
            page.keyboard.type("clearer and correct")
            page.keyboard.press("Escape")
        page.keyboard.press("Enter")
        expect(page.locator("#progress-done")).to_have_text(str(n))
        assert page.text_content("#message") == ""
        if n < 3:
            assert page.text_content("#prompt") != before
    assert page.text_content("#progress-left") == "1"  # 4 pairs, one still to go

    # 4. the admin signs in through the printed link, sees agreement, exports
    admin = browser.new_context(accept_downloads=True).new_page()
    _watch(admin, errors)
    admin.goto(f"{base}/login#{server['admin']}")
    admin.wait_for_url(f"{base}/admin")
    admin.click("text=browser")
    assert "alice" in admin.text_content("#annotators") and "bob" in admin.text_content("#annotators")
    assert admin.text_content("#stat-alpha") not in ("", None)
    assert "alice" in admin.text_content("#kappa")
    with admin.expect_download() as dl:
        admin.click("#export-link")
    data = Path(dl.value.path()).read_bytes()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "preferences.parquet" in names and "agreement.json" in names
    assert errors == [], errors

"""New users' flows in a real browser (Playwright driving Debian's headless Chromium), each one the way a
person would do it: the admin's pages read the numbers they print, the annotator works key by key with no
mouse, and every new page keeps model text inert. Any console error (a CSP violation is one) fails a test."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from rlhf_lab.annotate import crud, queue
from rlhf_lab.annotate.app import create_app
from rlhf_lab.annotate.store import Annotator, Assignment, Label, LabelRevision
from tests.annotate.conftest import CHROMIUM, XSS_IMG, XSS_SCRIPT, expect, jsonl, live, pair_rows

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")]


def items(n: int, *, prefix: str = "p", gold: dict[int, str] | None = None) -> list[dict]:
    """`n` pairs as the store takes them; the first carries XSS payloads in its model text."""
    gold = gold or {}
    return [{"uid": r["pair_id"], "prompt": r["prompt"], "response_a": r["response_a"],
             "response_b": r["response_b"], "is_gold": i in gold, "gold_choice": gold.get(i)}
            for i, r in enumerate(pair_rows(n, prefix=prefix))]






def open_page(browser, errors: list[str]):
    page = browser.new_context().new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def sign_in_admin(browser, base: str, store, errors: list[str]):
    page = open_page(browser, errors)
    page.goto(f"{base}/login#{crud.issue_admin_token(store)}")
    page.wait_for_url(f"{base}/admin")
    return page


def join(browser, base: str, store, *, pid: int, name: str, errors: list[str]):
    with store.session() as s:
        token = crud.create_invite(s, project_id=pid, name=name)
    page = open_page(browser, errors)
    page.goto(f"{base}/join#{token}")
    page.wait_for_url(f"{base}/label")
    return page


def test_admin_pages_print_the_pair_counts(sqlite_url, tmp_path, browser):
    app = create_app(sqlite_url, run_dir=tmp_path)
    store = app.state.ctx.store
    pid = store.create_project_with_items("seven", items(8, gold={7: "a"})).id  # 7 pairs and 1 gold check
    errors: list[str] = []
    with live(app) as base:
        admin = sign_in_admin(browser, base, store, errors)
        row = admin.locator("tr", has_text="seven")
        assert row.locator("td").nth(1).text_content().strip() == "8"  # every pair of the project
        admin.click("text=seven")
        admin.wait_for_url(f"{base}/admin/projects/{pid}")
        assert admin.text_content("#stat-pairs") == "7"  # the gold check is counted apart
        assert "built-in method" not in admin.content()
    assert errors == [], errors


def _screen_labels(store, name: str) -> list[tuple[str, str | None, str | None]]:
    """(screen choice, strength, rationale) of `name`'s stored labels, oldest first."""
    with store.session() as s:
        aid = s.scalar(select(Annotator.id).where(Annotator.name == name))
        labels = s.scalars(select(Label).where(Label.annotator_id == aid).order_by(Label.id)).all()
        return [(queue.label_view(lab)["choice"], lab.strength, lab.rationale) for lab in labels]


def test_keyboard_only_flow_stores_every_label(sqlite_url, tmp_path, browser):
    """Key by key, no mouse: a rationale submitted with Ctrl+Enter, then a tie, a skip and a preference.
    The keys after Ctrl+Enter must reach the next pair, not the rationale box."""
    app = create_app(sqlite_url, run_dir=tmp_path)
    store = app.state.ctx.store
    pid = store.create_project_with_items("keys", items(6), guidelines="# Rules\n\nPrefer **true** answers.").id
    errors: list[str] = []
    with live(app) as base:
        page = join(browser, base, store, pid=pid, name="kim", errors=errors)
        kb = page.keyboard

        def next_pair(action) -> None:
            before = page.text_content("#prompt")
            action()
            expect(page.locator("#prompt")).not_to_have_text(before)
            assert page.text_content("#message") == ""

        page.keyboard.press("g")
        expect(page.locator("#guidelines-dialog")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#guidelines-dialog")).to_be_hidden()
        # 1. left, much better, a rationale, submitted from the text box
        for key in ["1", "m", "r"]:
            kb.press(key)
        kb.type(f"clearer {XSS_SCRIPT}")
        next_pair(lambda: kb.press("Control+Enter"))
        assert page.evaluate("document.activeElement.id") != "rationale"
        # 2. a tie with t and Enter, right after the Ctrl+Enter
        next_pair(lambda: (kb.press("t"), kb.press("Enter")))
        # 3. skip with k
        next_pair(lambda: kb.press("k"))
        # 4. right, slightly; a rationale left with Esc, then Enter
        kb.press("ArrowRight")
        kb.press("s")
        kb.press("r")
        kb.type("shorter")
        kb.press("Escape")
        next_pair(lambda: kb.press("Enter"))
        expect(page.locator("#progress-done")).to_have_text("3")
        assert page.input_value("#rationale") == ""
    assert _screen_labels(store, "kim") == [("left", "much", f"clearer {XSS_SCRIPT}"), ("tie", None, None),
                                           ("right", "slightly", "shorter")]
    with store.session() as s:
        statuses = s.scalars(select(Assignment.status).order_by(Assignment.id)).all()
    assert statuses == ["done", "done", "skipped", "done", "pending"]
    assert errors == [], errors


def test_new_project_form_suggests_a_free_name(sqlite_url, tmp_path, browser):
    """Serving a run: the form pre-fills "run"; once that exists, a name no project has, which creates."""
    (tmp_path / "pairs.jsonl").write_text(jsonl(pair_rows(3)))
    app = create_app(sqlite_url, run_dir=tmp_path)
    store = app.state.ctx.store
    errors: list[str] = []
    with live(app) as base:
        admin = sign_in_admin(browser, base, store, errors)
        names = []
        for _ in range(2):
            name = admin.input_value("input[name=name]")
            names.append(name)
            admin.click("form[action='/admin/projects'] button[type=submit]")
            admin.wait_for_url(f"{base}/admin/projects/*")
            assert admin.text_content("h1") == name
            admin.goto(f"{base}/admin")
        assert names == ["run", "run-2"]
        assert admin.input_value("input[name=name]") == "run-3"
    assert [p.name for p in store.projects()] == ["run", "run-2"]
    assert errors == [], errors


def test_both_bad_and_changing_the_last_label_by_keyboard(sqlite_url, tmp_path, browser):
    """4 is "both bad"; u brings the last pair back with its answer, Enter (here Ctrl+Enter) stores the
    change and returns to the current pair; u twice changes nothing. The count of pairs left is exact."""
    app = create_app(sqlite_url, run_dir=tmp_path)
    store = app.state.ctx.store
    pid = store.create_project_with_items("undo", items(6)).id
    errors: list[str] = []
    with live(app) as base:
        page = join(browser, base, store, pid=pid, name="uma", errors=errors)
        kb = page.keyboard
        assert page.text_content("#progress-left") == "6"
        kb.press("4")
        assert page.is_disabled("input[name=strength][value=much]")
        kb.press("Enter")
        expect(page.locator("#progress-done")).to_have_text("1")
        second = {k: page.text_content(f"#{k}") for k in ("prompt", "left", "right")}
        kb.press("1")
        kb.press("m")
        kb.press("Enter")
        expect(page.locator("#progress-done")).to_have_text("2")
        third = page.text_content("#prompt")
        assert page.text_content("#progress-left") == "4"

        kb.press("u")
        expect(page.locator("#editing")).to_be_visible()
        assert {k: page.text_content(f"#{k}") for k in ("prompt", "left", "right")} == second
        assert page.is_checked("input[name=choice][value=left]") and page.is_checked("input[name=strength][value=much]")
        kb.press("2")
        kb.press("s")
        kb.press("r")
        kb.type("changed my mind")
        kb.press("Control+Enter")
        expect(page.locator("#editing")).to_be_hidden()
        expect(page.locator("#prompt")).to_have_text(third)
        assert page.text_content("#progress-done") == "2" and page.text_content("#progress-left") == "4"

        kb.press("u")
        expect(page.locator("#editing")).to_be_visible()
        kb.press("u")
        expect(page.locator("#editing")).to_be_hidden()
        expect(page.locator("#prompt")).to_have_text(third)
    assert _screen_labels(store, "uma") == [("both_bad", None, None), ("right", "slightly", "changed my mind")]
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(LabelRevision)) == 1
    assert errors == [], errors


def test_label_browser_filters_pages_and_escapes(sqlite_url, tmp_path, browser):
    """60 labels (30 pairs × 2 annotators, one a gold check): the admin filters by keyboard, by pair and by
    annotator, pages through, and sees rationales, gold results and agreement — hostile text as text."""
    app = create_app(sqlite_url, run_dir=tmp_path)
    store = app.state.ctx.store
    pid = store.create_project_with_items("browse", items(30, gold={5: "a"}), overlap=2, gold_rate=0.1).id
    hostile = f"eve {XSS_IMG}"
    ids = {n: store.add_annotator(pid, n).id for n in ("ann", hostile)}
    hints = queue.FrontierHints()
    with store.session() as s:
        for name, aid in ids.items():
            for n in range(30):
                nxt = queue.next_assignment(s, annotator_id=aid, project_id=pid, hints=hints)
                queue.submit_label(s, annotator_id=aid, project_id=pid, assignment_id=nxt["assignment_id"],
                                   client_id=uuid.uuid4().hex, choice="left" if n % 3 else "tie",
                                   strength="much", rationale=f"{name} {n} {XSS_SCRIPT}", time_spent_ms=1500)
    errors: list[str] = []
    with live(app) as base:
        admin = sign_in_admin(browser, base, store, errors)
        admin.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
        admin.goto(f"{base}/admin/projects/{pid}")
        admin.focus("#browse-labels")
        admin.keyboard.press("Enter")
        admin.wait_for_url(f"{base}/admin/projects/{pid}/labels")
        assert admin.text_content("#label-total") == "60"
        assert admin.locator("#label-rows tbody tr").count() == 50
        admin.focus("#next-page")
        admin.keyboard.press("Enter")
        expect(admin.locator("#label-rows tbody tr")).to_have_count(10)

        # by keyboard: a pair id, Enter
        admin.focus("input[name=pair]")
        admin.keyboard.type("p5")
        admin.keyboard.press("Enter")
        expect(admin.locator("#label-total")).to_have_text("2")
        rows = admin.locator("#label-rows tbody tr")
        assert {rows.nth(i).locator("td").first.text_content() for i in range(2)} == {"p5"}
        gold = [rows.nth(i).locator("td.gold").text_content().strip() for i in range(2)]
        same = [rows.nth(i).locator("td.same").text_content().strip() for i in range(2)]
        assert all(g.startswith("A ") and g[-1] in "✓✗" for g in gold)
        assert set(same) <= {"1 of 2", "2 of 2"}

        # the hostile annotator's own rows: names and rationales shown as text, nothing runs
        admin.goto(f"{base}/admin/projects/{pid}/labels?{urlencode({'annotator': hostile})}")
        assert admin.text_content("#label-total") == "30"
        names = admin.locator("#label-rows tbody tr td:nth-child(3)").all_text_contents()
        assert set(names) == {hostile}
        assert XSS_SCRIPT in admin.locator("#label-rows").text_content()
        assert admin.locator("#label-rows img, #label-rows script").count() == 0
        admin.goto(f"{base}/admin/projects/{pid}/labels?choice=tie&gold=regular")
        ties = int(admin.text_content("#label-total"))
        assert 0 < ties < 30 and {t.strip() for t in admin.locator("td.answer").all_text_contents()} == {"tie"}
        assert admin.request.get(f"{base}/admin/projects/{pid}/labels?choice=%3Cscript%3E").status == 422
    assert errors == [], errors

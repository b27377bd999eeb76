"""The report in a real browser: headless Chromium opens report.html from disk, logs no console error,
and shows every section; a screenshot goes to /tmp for a person to look at."""

import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
SECTIONS = ("summary", "choices", "overoptimisation", "training", "sycophancy", "diversity", "flattening",
            "deception", "harm", "samples")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")]


def _open(html_path: Path, screenshot: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html_path.resolve().as_uri())
        page.wait_for_load_state("load")
        visible = {s: page.locator(f"#{s}").is_visible() for s in SECTIONS}
        images = page.evaluate("Array.from(document.images).map(i => [i.naturalWidth, i.complete])")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return errors, requests, visible, images, overflow


def test_report_renders_in_chromium(micro_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    errors, requests, visible, images, overflow = _open(run / "report.html", Path("/tmp/rlhf_lab_report.png"))
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing from a network
    assert all(visible.values()), visible
    assert len(images) >= 6 and all(w > 0 and ok for w, ok in images)  # every plot decoded
    assert overflow <= 0  # nothing wider than the window


def test_comparison_renders_in_chromium(micro_run, tmp_path):
    from rlhf_lab.audit import write_comparison

    out = write_comparison([micro_run, micro_run], tmp_path / "cmp.html")
    errors, requests, _, images, overflow = _open(out, Path("/tmp/rlhf_lab_comparison.png"))
    assert errors == [] and all(u.startswith(("file:", "data:")) for u in requests)
    assert len(images) >= 6 and overflow <= 0


def test_hostile_fields_run_nothing_in_chromium(tmp_path):
    """The XSS corpus in every field of audit.json and config.yaml: Chromium opens no dialog, builds no
    script, frame or handler, and shows the payload as text. The collapse is said on the first screen."""
    from rlhf_lab.audit import write_comparison, write_report
    from tests.audit.test_report_xss import RUN_NAME, hostile_run

    run = hostile_run(tmp_path / RUN_NAME)
    pages = [write_report(run, audit_if_missing=False), write_comparison([run, run], tmp_path / "cmp.html")]
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        for path in pages:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d, seen=dialogs: (seen.append(d.message), d.dismiss()))
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            bad = page.evaluate("document.querySelectorAll('script,iframe,svg,object,embed,textarea,"
                                "[onerror],[onload],[srcdoc],a[href^=\"javascript\"]').length")
            text = page.evaluate("document.body.innerText")
            assert dialogs == [] and bad == 0, (path, dialogs, bad)
            assert "<script>alert(1)</script>" in text
            if path.name == "report.html":
                box = page.locator("#collapse").bounding_box()
                assert box is not None and box["y"] + box["height"] <= 900  # on the first screen
                assert "answers collapsed" in page.locator("#collapse").inner_text()
            page.close()
        browser.close()

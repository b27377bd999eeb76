"""Hostile text in audit.json, config.yaml and the run folder's name stays text in report.html and
compare.html: parsed back, the pages hold only the elements and attributes the report itself writes
(issue 15, security 5: the fit table's key was written unescaped)."""

from html.parser import HTMLParser

import yaml

from rlhf_lab.audit.compare import write_comparison
from rlhf_lab.audit.report import write_report
from tests.audit.test_report_flags import collapsed_audit, write_run

XSS = ('<script>alert(1)</script>', '"><img src=x onerror=alert(2)>', "'><svg onload=alert(3)>",
       'javascript:alert(4)', '</textarea><script>alert(5)</script>', '</title><script>alert(6)</script>',
       '<a href="javascript:alert(7)">x</a>', '<style>body{display:none}</style>', '<iframe srcdoc=x>',
       '{{7*7}}${7*7}', '\u202e<b>rtl</b>\u2028<i>sep</i> ü 😀 e\u0301', '<!--')
PAYLOAD = "".join(XSS)
RUN_NAME = '"><img src=x onerror=alert(8)>'  # a folder name may hold < > " and spaces

# Everything report.py / compare.py / page.py write themselves.
TAGS = {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "div", "nav", "a", "section",
        "table", "tr", "th", "td", "small", "br", "span", "img", "b", "p", "footer"}


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.found.append((tag, attrs))


def injected(html: str) -> list[str]:
    """Elements or attributes in `html` that the report would never write."""
    p = Elements()
    p.feed(html)
    bad = []
    for tag, attrs in p.found:
        if tag not in TAGS:
            bad.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in ("srcdoc", "formaction"):
                bad.append(f"{tag}[{name}]")
            if name in ("href", "src") and not (value or "").startswith(("#", "data:image/png;base64,")):
                bad.append(f"{tag}[{name}={value}]")
    return bad


def hostile_audit() -> dict:
    audit = collapsed_audit(hostile=PAYLOAD)
    over = audit["tensions"]["overoptimisation"]
    # the fit table's key, and a fit whose fields are text
    over["rl"]["fit"] = {PAYLOAD: {"alpha": 0.3, "beta": 0.1, "r2": 0.5, "n": PAYLOAD}}
    over["title"] = PAYLOAD
    for section in audit["tensions"].values():
        section["notes"] = [PAYLOAD]
        for m in section["metrics"].values():
            m["label"] = PAYLOAD
            m["unit"] = PAYLOAD
    audit["run"] = audit["policy_path"] = PAYLOAD
    return audit


def hostile_run(folder):
    run = write_run(folder, hostile_audit())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["label"]["annotator_groups"] = [{"name": PAYLOAD, "share": 1.0, "detail_preference": 0.0}]
    cfg["policy"]["algorithm"] = PAYLOAD
    cfg[PAYLOAD] = {PAYLOAD: PAYLOAD}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def test_hostile_fields_stay_text_in_the_report(tmp_path):
    run = hostile_run(tmp_path / RUN_NAME)
    html = write_report(run, audit_if_missing=False).read_text()
    assert injected(html) == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, not dropped
    assert "<script" not in html and "<img src=x" not in html


def test_hostile_fields_stay_text_in_the_comparison(tmp_path):
    a = hostile_run(tmp_path / RUN_NAME)
    b = hostile_run(tmp_path / "b")
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["seed"] = 1  # a difference, so the differences table has a row
    (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    html = write_comparison([a, b], tmp_path / "cmp.html").read_text()
    assert injected(html) == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_checker_sees_an_injection():
    """The checker itself: it must flag what an unescaped field would let through."""
    assert injected(f"<td>{XSS[0]}</td>") == ["<script>"]
    assert "img[onerror]" in injected(f'<img alt="{XSS[1]}">')
    assert injected('<a href="javascript:alert(7)">x</a>') == ["a[href=javascript:alert(7)]"]

"""Helpers for the report tests: parse the HTML, check that nothing untrusted became markup, run Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

#: Every element the report template itself writes. Anything else in the output came from data.
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "div", "h1", "h2", "h3", "span", "section",
    "p", "strong", "nav", "a", "main", "table", "thead", "tbody", "tr", "th", "td", "b", "i", "svg", "line",
    "text", "rect", "g", "circle", "pre", "details", "summary", "input", "footer", "script",
}


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict | None = None
        self._buf: list[str] = []
        self.pres: list[str] = []  # text of each <pre> element, entities decoded
        self._pre: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        self.tags.append((tag, d))
        if tag == "script":
            self._in_script, self._buf = d, []
        elif tag == "pre":
            self._pre = []

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if self._in_script is not None:
            self._buf.append(data)
        if self._pre is not None:
            self._pre.append(data)

    def handle_endtag(self, tag):
        if tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None
        if tag == "script" and self._in_script is not None:
            self.scripts.append((self._in_script, "".join(self._buf)))
            self._in_script = None


def parse(html: str) -> Collector:
    c = Collector()
    c.feed(html)
    c.close()
    return c


def assert_inert(html: str) -> Collector:
    """The page holds only the template's own markup: known tags, no event handlers, no external or
    javascript: links, exactly the two scripts the template writes, and data JSON that cannot break out."""
    c = parse(html)
    tags = {t for t, _ in c.tags}
    assert tags <= ALLOWED_TAGS, f"unexpected elements: {sorted(tags - ALLOWED_TAGS)}"
    for tag, attrs in c.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), f"event handler attribute {name!r} on <{tag}>"
            assert name not in ("src", "srcdoc", "formaction", "xlink:href", "action"), f"{name} on <{tag}>"
            if name == "href":
                assert value is not None and value.startswith("#"), f"non-local link {value!r}"
            if name == "style":
                assert "url(" not in (value or "") and "expression" not in (value or ""), value
    assert len(c.scripts) == 2, f"{len(c.scripts)} script elements"
    (data_attrs, data_text), (_js_attrs, _js_text) = c.scripts
    assert data_attrs.get("type") == "application/json" and data_attrs.get("id") == "dg-data"
    assert "<" not in data_text and ">" not in data_text
    json.loads(data_text)
    low = html.lower()
    assert low.count("<script") == 2 and low.count("</script") == 2, "a script tag came from the data"
    for needle in ("<img", "<iframe", "<base", "<link", "<object", "<embed", "<svg/", "@import", "url(http"):
        assert needle not in low, f"{needle!r} appears unescaped"
    return c


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not path:
        pytest.fail("chromium is not installed: apt-get update && apt-get install -y chromium chromium-driver")
    return path


def chromium(args: list[str], timeout: float = 90.0) -> str:
    exe = chromium_path()
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


def dump_dom(path: Path) -> str:
    return chromium(["--dump-dom", path.resolve().as_uri()])

"""The report renders in headless Chromium: sections present, page script ran without errors, hostile
text stayed text in the live DOM. Fails (does not skip) when Chromium is not installed."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from distillguard.corpora import iter_items
from distillguard.report import render_report

from report_checks import ALLOWED_TAGS, chromium, dump_dom, parse
from report_fixtures import XSS, build


def _root_attrs(dom: str) -> str:
    m = re.search(r"<html[^>]*>", dom)
    assert m, "no <html> element in the dumped DOM"
    return m.group(0)


def _check_live_dom(dom: str) -> None:
    root = _root_attrs(dom)
    assert "data-error" not in root, f"page script reported an error: {root}"
    assert 'data-ok="1"' in root, "page script did not finish (no data-ok marker)"
    c = parse(dom)
    tags = {t for t, _ in c.tags}
    assert tags <= ALLOWED_TAGS | {"tspan"}, sorted(tags - ALLOWED_TAGS)
    for tag, attrs in c.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
    assert len(c.scripts) == 2


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    accounts, doc, events, signals = build()
    out = tmp_path_factory.mktemp("chrome") / "report.html"
    render_report(accounts, doc, events=events, signals=signals, out_path=out, title="Report " + XSS[0])
    return out, dump_dom(out)


def test_sections_render_and_script_runs(rendered):
    _, dom = rendered
    _check_live_dom(dom)
    for anchor in ("verdict", "overview", "campaign-1", "campaign-2", "campaign-3", "campaign-4", "top-accounts"):
        assert f'id="{anchor}"' in dom, anchor
    assert dom.count("<circle") >= 250  # graphs of 140 + 90 + 45 + 18 member accounts
    assert dom.count('class="bar-req"') > 50  # hourly request bars
    assert dom.count('class="bar-tok"') > 50  # hourly reasoning-token bars
    assert "Top flagged accounts" in dom and "Evidence" in dom and "Sample prompts" in dom
    assert "MITRE ATLAS techniques" in dom and "AML.T0024.002" in dom


def test_hostile_text_is_text_in_the_live_dom(rendered):
    _, dom = rendered
    # the data JSON survived the browser's parser intact
    c = parse(dom)
    data = json.loads(c.scripts[0][1])
    assert len(data["campaigns"]) == 4
    assert any("<script>" in n[0] for nodes in data["graphs"].values() for n in nodes)
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom


def test_interactions_with_hostile_ids(rendered):
    """The page's self-test (report.html#dg-selftest) clicks every graph node and checks the info panel
    shows exactly that account id, then sorts and filters the accounts table."""
    out, _ = rendered
    dom = chromium(["--dump-dom", out.resolve().as_uri() + "#dg-selftest"])
    _check_live_dom(dom)
    m = re.search(r'data-selftest="(\d+)"', _root_attrs(dom))
    assert m and int(m.group(1)) >= 250, "self-test did not click the graph nodes"
    # after the clicks the last panel holds a hostile id as text, not markup
    assert "<img" not in dom and dom.count("<script") == 2


def test_screenshot(rendered, tmp_path):
    out, _ = rendered
    png = tmp_path / "shot.png"
    chromium(["--hide-scrollbars", "--window-size=1280,2000", f"--screenshot={png}", out.resolve().as_uri()])
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_jailbreak_corpus_report_renders(tmp_path):
    items = list(iter_items("jailbreaks"))
    campaigns = [{"campaign_id": f"JB{j:03d} " + items[j].text[:40], "flagged": True, "score": 0.8,
                  "accounts": [items[j].text[:30] + f"#{j}"],
                  "sample_prompts": [it.text for it in items[j * 6:(j + 1) * 6]]}
                 for j in range(len(items) // 6 + 1)]
    ids = [c["accounts"][0] for c in campaigns]
    accounts = pa.table({"account_id": ids, "score": [0.8] * len(ids), "flagged": [True] * len(ids),
                         "campaign_id": [c["campaign_id"] for c in campaigns],
                         "reasons": [items[j].text[-200:] for j in range(len(ids))]})
    out = render_report(accounts, {"campaigns": campaigns}, out_path=tmp_path / "jb.html")
    dom = dump_dom(out)
    _check_live_dom(dom)
    assert dom.count('class="prompt"') == sum(len(c["sample_prompts"]) for c in campaigns)

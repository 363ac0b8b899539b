"""Untrusted text in the report stays text: XSS payloads in every field, every in-the-wild jailbreak prompt."""

from __future__ import annotations

import json

import pytest
from markupsafe import escape

from distillguard.corpora import iter_items
from distillguard.report import render_report
from distillguard.report.text import clean, js_json

from report_checks import assert_inert
from report_fixtures import XSS, build


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    accounts, doc, events, signals = build()
    out = tmp_path_factory.mktemp("rep") / "report.html"
    render_report(accounts, doc, events=events, signals=signals, out_path=out, title="T " + XSS[1])
    return out.read_text(encoding="utf-8"), accounts, doc


def test_payloads_never_become_markup(hostile_report):
    html, _, _ = hostile_report
    c = assert_inert(html)
    sections = [a for t, a in c.tags if t == "section" and "campaign" in (a.get("class") or "")]
    assert len(sections) == 4


@pytest.mark.parametrize("payload", XSS)
def test_payload_shown_escaped_not_dropped(hostile_report, payload):
    html, _, _ = hostile_report
    shown = str(escape(clean(payload)[:40]))
    assert shown in html, "the payload should be visible to the analyst as text"
    if "<" in payload:
        assert payload not in html


def test_hostile_account_ids_in_table_and_graph_data(hostile_report):
    html, accounts, _ = hostile_report
    c = assert_inert(html)
    data = json.loads(c.scripts[0][1])
    node_ids = {n[0] for nodes in data["graphs"].values() for n in nodes}
    hostile = [a for a in accounts.column("account_id").to_pylist() if any(p in a for p in XSS)]
    assert len(hostile) >= 20
    flagged_hostile = [a for a, f in zip(accounts.column("account_id").to_pylist(),
                                          accounts.column("flagged").to_pylist()) if f and a in hostile]
    for a in flagged_hostile:
        assert clean(a, 120) in node_ids
        assert str(escape(clean(a, 80))) in html


def test_bidi_and_invisible_characters_are_made_visible():
    assert clean("abc\u202edef") == "abc\u27e6U+202E\u27e7def"
    assert clean("ad\u200bmin\ufeff") == "ad\u27e6U+200B\u27e7min\u27e6U+FEFF\u27e7"
    assert clean("a\x00b\x1b") == "a\u27e6U+0000\u27e7b\u27e6U+001B\u27e7"
    assert clean("x" * 50, 10) == "x" * 9 + "\u2026"
    assert clean("line1\nline2", keep_newlines=True) == "line1\nline2"


def test_js_json_cannot_close_the_script():
    text = js_json({"p": "</script><script>alert(1)</script><!--", "q": "\u2028&'"})
    assert "<" not in text and ">" not in text and "&" not in text and "'" not in text
    assert "\u2028" not in text
    assert json.loads(text) == {"p": "</script><script>alert(1)</script><!--", "q": "\u2028&'"}


def test_every_jailbreak_prompt_as_sample_prompt(tmp_path):
    """All 666 in-the-wild jailbreak prompts, whole (split into chunks under the display limit), as the
    sample prompts of campaigns, plus as campaign ids and account reasons."""
    items = list(iter_items("jailbreaks"))
    assert len(items) > 600
    chunks = []
    for it in items:
        t = it.text
        chunks += [t[i:i + 250] for i in range(0, len(t), 250)]
    campaigns = []
    per = 6
    for k in range(0, len(chunks), per):
        j = k // per
        campaigns.append({"campaign_id": f"J{j:04d} " + items[j % len(items)].text[:60], "score": 0.9,
                          "flagged": True, "accounts": [f"jb-{j}"], "sample_prompts": chunks[k:k + per]})
    import pyarrow as pa
    accounts = pa.table({"account_id": [f"jb-{j}" for j in range(len(campaigns))],
                         "score": [0.9] * len(campaigns), "flagged": [True] * len(campaigns),
                         "campaign_id": [c["campaign_id"] for c in campaigns],
                         "reasons": [items[j % len(items)].text[:300] for j in range(len(campaigns))]})
    out = render_report(accounts, {"campaigns": campaigns}, out_path=tmp_path / "jb.html")
    html = out.read_text(encoding="utf-8")
    c = assert_inert(html)
    # each prompt chunk is shown, as exactly the text given (after invisible characters are marked)
    assert sorted(c.pres) == sorted(clean(ch, 280, keep_newlines=True) for ch in chunks)

"""render_report: numbers shown match the inputs, every input form works, bad input names file/line/field."""

from __future__ import annotations

import json
import re

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.report import ReportInputError, render_report
from distillguard.report.load import load_accounts, load_campaigns
from distillguard.report.text import fmt_num, human

from report_checks import assert_inert, parse
from report_fixtures import build, write_accounts_csv


@pytest.fixture(scope="module")
def fx():
    return build(hostile=False)


@pytest.fixture(scope="module")
def findings_dir(fx, tmp_path_factory):
    accounts, doc, events, signals = fx
    d = tmp_path_factory.mktemp("findings")
    write_accounts_csv(accounts, d / "accounts.csv")
    (d / "campaigns.json").write_text(json.dumps(doc))
    pq.write_table(events, d / "events.parquet")
    pq.write_table(signals, d / "signals.parquet")
    return d


def _section(html: str, anchor: str) -> str:
    start = html.index(f'id="{anchor}"')
    end = html.find('<section class="campaign', start + 1)
    return html[start: end if end > 0 else len(html)]


def test_verdict_totals_match_flagged_campaigns(fx, tmp_path):
    accounts, doc, events, signals = fx
    out = render_report(accounts, doc, events=events, signals=signals, out_path=tmp_path / "r.html")
    html = out.read_text()
    flagged = [c for c in doc["campaigns"] if c["flagged"]]
    # campaigns.json carries no request totals here: the report computes them from the events
    members = {a for c in flagged for a in c["accounts"]}
    ev = events.filter(pc.is_in(events.column("account_id"), pa.array(sorted(members))))
    n_req, n_tok = ev.num_rows, pc.sum(ev.column("reasoning_tokens")).as_py()
    head = html[: html.index('<nav class="toc"')]
    assert f"{len(flagged)} distillation campaigns" in head
    assert f"{fmt_num(sum(c['n_accounts'] for c in flagged))} accounts" in head
    assert f"{fmt_num(n_req)} requests" in head
    assert f"{human(n_tok)} reasoning tokens" in head
    n_flagged = pc.sum(accounts.column("flagged")).as_py()
    assert f"{fmt_num(n_flagged)} flagged of {fmt_num(accounts.num_rows)} scored" in head


def test_timeline_totals_equal_member_events(fx, tmp_path):
    accounts, doc, events, signals = fx
    html = render_report(accounts, doc, events=events, signals=signals, out_path=tmp_path / "r.html").read_text()
    camps = sorted(doc["campaigns"], key=lambda c: (not c["flagged"], -c["score"]))
    for i, c in enumerate(camps, 1):
        ev = events.filter(pc.is_in(events.column("account_id"), pa.array(c["accounts"])))
        sec = _section(html, f"campaign-{i}")
        totals = re.findall(r"total ([\d,]+) · peak", sec)
        assert totals[0] == fmt_num(ev.num_rows)
        assert totals[1] == fmt_num(pc.sum(ev.column("reasoning_tokens")).as_py())
        # one bar title per non-empty hour; their counts add up to the total
        counts = [int(x.replace(",", "")) for x in re.findall(r"UTC · ([\d,]+) requests", sec)]
        assert sum(counts) == ev.num_rows


def test_evidence_rows_and_crossing(fx, tmp_path):
    accounts, doc, _, _ = fx
    html = render_report(accounts, doc, out_path=tmp_path / "r.html").read_text()
    sec = _section(html, "campaign-1")
    assert sec.count('class="badge fired"') == 4  # 3 values >= threshold, 1 value <= an upper bound
    assert sec.count('class="badge quiet"') == 0
    low = _section(html, "campaign-4")  # the below-threshold group: 0.05 < 0.2
    assert low.count('class="badge quiet"') == 1


def test_minimal_inputs_are_tolerated(tmp_path):
    accounts = pa.table({"account_id": ["a", "b", "c"]})
    doc = {"campaigns": [{"campaign_id": "X1", "accounts": ["a", "b"]}]}
    html = render_report(accounts, doc, out_path=tmp_path / "m.html").read_text()
    assert_inert(html)
    assert "No timeline" in html and "No per-pair links" in html and "No evidence items" in html
    empty = render_report(None, None, out_path=tmp_path / "e.html").read_text()
    assert "No distillation campaign flagged" in empty
    assert_inert(empty)


def test_given_edges_table_draws_those_links(fx, tmp_path):
    accounts, doc, events, _ = fx
    c0 = doc["campaigns"][0]["accounts"]
    edges = pa.table({"src": [c0[0], c0[1], c0[2]], "dst": [c0[1], c0[2], c0[3]],
                      "kind": ["sync", "created_burst", "sync"], "weight": [1.0, 1.0, 1.0]})
    html = render_report(accounts, doc, events=events, edges=edges, out_path=tmp_path / "g.html").read_text()
    sec = _section(html, "campaign-1")
    assert sec.count('data-k="sync"') == 2 and sec.count('data-k="created_burst"') == 1
    assert 'data-k="payment"' not in sec  # links come from the edges table, not derived from events


def test_derived_links_from_events_and_signals(fx, tmp_path):
    accounts, doc, events, signals = fx
    html = render_report(accounts, doc, events=events, signals=signals, out_path=tmp_path / "d.html").read_text()
    sec = _section(html, "campaign-1")
    assert 'data-k="payment"' in sec
    # every account of the campaign shares its system prompt: listed once, not drawn
    assert "Links joining nearly all the accounts drawn" in sec and 'data-k="system_prompt"' not in sec


def test_events_from_duckdb_store_and_parquet(fx, tmp_path):
    accounts, doc, events, _ = fx
    db = tmp_path / "store.duckdb"
    con = duckdb.connect(str(db))
    con.register("e", events)
    con.execute("CREATE TABLE events AS SELECT * FROM e")
    a = render_report(accounts, doc, events=db, out_path=tmp_path / "a.html").read_text()  # file held open
    b = render_report(accounts, doc, events=con, out_path=tmp_path / "b.html").read_text()
    con.close()
    a2 = render_report(accounts, doc, events=db, out_path=tmp_path / "a2.html").read_text()  # attached
    pq.write_table(events, tmp_path / "ev.parquet")
    c = render_report(accounts, doc, events=tmp_path / "ev.parquet", out_path=tmp_path / "c.html").read_text()
    strip = lambda h: re.sub(r"report rendered [^<]*UTC", "", h)  # noqa: E731
    assert strip(a) == strip(b) == strip(a2) == strip(c)
    assert "bar-req" in a


def test_prompts_from_events_when_findings_have_none(fx, tmp_path):
    accounts, doc, events, _ = fx
    html = render_report(accounts, doc, events=events, out_path=tmp_path / "p.html").read_text()
    camps = sorted(doc["campaigns"], key=lambda c: (not c["flagged"], -c["score"]))
    i = next(k for k, c in enumerate(camps, 1) if not c["sample_prompts"])
    sec = _section(html, f"campaign-{i}")
    assert "Most repeated prompts" in sec
    times = [int(x.replace(",", "")) for x in re.findall(r"sent ([\d,]+) times", sec)]
    assert times and times == sorted(times, reverse=True)
    prompts = parse(sec).pres
    ev = events.filter(pc.is_in(events.column("account_id"), pa.array(camps[i - 1]["accounts"])))
    texts = ev.column("user_text").to_pylist()
    assert texts.count(prompts[0]) == times[0]


def test_cli_report_from_findings_dir(findings_dir, tmp_path):
    out = tmp_path / "cli.html"
    res = CliRunner().invoke(app, ["report", str(findings_dir), "--out", str(out), "--title", "Weekly"])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "<title>Weekly</title>" in html and "bar-tok" in html and ">Extraction<" in html
    assert_inert(html)


def test_cli_input_errors_exit_3(findings_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 3
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "campaigns.json").write_text("{}")
    (bad / "accounts.csv").write_text("account_id,score,flagged,campaign_id,reasons\na1,0.5,true,,\na2,high,true,,\n")
    res = runner.invoke(app, ["report", str(bad), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 3
    assert "accounts.csv:3: field 'score'" in res.output


@pytest.mark.parametrize("body,message", [
    ("account_id,score,flagged,campaign_id,reasons\na,0.1,maybe,,\n", ":2: field 'flagged'"),
    ("account_id,score,flagged,campaign_id,reasons\na,0.1,true\n", ":2: expected 5 fields"),
    ("account_id,score,flagged,campaign_id,reasons\na,0.1,true,,\n,0.2,true,,\n", ":3: field 'account_id': empty"),
    ("score,flagged\n0.1,true\n", ":1: field 'account_id'"),
    ("account_id,score,flagged,campaign_id,reasons\na,nan,true,,\n", ":2: field 'score'"),
])
def test_bad_accounts_csv(tmp_path, body, message):
    p = tmp_path / "accounts.csv"
    p.write_text(body)
    with pytest.raises(ReportInputError, match=re.escape(str(p) + message)):
        load_accounts(p)


@pytest.mark.parametrize("doc,message", [
    ('{"campaigns": [\n{"campaign_id": "a",}\n]}', ":2: invalid JSON"),
    ('{"campaigns": {"a": 1}}', "field 'campaigns': expected a list"),
    ('{"campaigns": [{"score": 1}]}', "campaigns[0].campaign_id: missing"),
    ('{"campaigns": [{"campaign_id": "a", "score": "high"}]}', "campaigns[0].score: expected a number"),
    ('{"campaigns": [{"campaign_id": "a", "capabilities": ["math"]}]}', "campaigns[0].capabilities"),
    ('{"campaigns": [{"campaign_id": "a"}, {"campaign_id": "b", "evidence": [1]}]}', "campaigns[1].evidence[0]"),
])
def test_bad_campaigns_json(tmp_path, doc, message):
    p = tmp_path / "campaigns.json"
    p.write_text(doc)
    with pytest.raises(ReportInputError, match=re.escape(message)):
        load_campaigns(p)
    with pytest.raises(ReportInputError, match=re.escape(str(p))):
        load_campaigns(p)


def test_events_missing_required_column(fx, tmp_path):
    accounts, doc, events, _ = fx
    with pytest.raises(ReportInputError, match="events table: field 'timestamp'"):
        render_report(accounts, doc, events=events.drop_columns(["timestamp"]), out_path=tmp_path / "x.html")


def test_no_external_resources(fx, tmp_path):
    accounts, doc, events, signals = fx
    html = render_report(accounts, doc, events=events, signals=signals, out_path=tmp_path / "r.html").read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"https?://", html)  # this fixture has no URLs in its data: none at all
    assert len(html) < 3_000_000


def test_given_edge_cliques_are_thinned_and_campaign_wide_kinds_listed(fx, tmp_path):
    accounts, doc, _, _ = fx
    members = doc["campaigns"][2]["accounts"]  # 45 accounts, all drawn
    src, dst, kind = [], [], []
    for i, a in enumerate(members):
        for b in members[i + 1:]:
            src.append(min(a, b)), dst.append(max(a, b)), kind.append("ip24")  # joins every pair
    group = members[:10]
    for i, a in enumerate(group):
        for b in group[i + 1:]:
            src.append(min(a, b)), dst.append(max(a, b)), kind.append("payment")  # a 10-clique
    edges = pa.table({"src": src, "dst": dst, "kind": kind, "weight": [1.0] * len(src)})
    html = render_report(accounts, doc, edges=edges, out_path=tmp_path / "w.html").read_text()
    camps = sorted(doc["campaigns"], key=lambda c: (not c["flagged"], -c["score"]))
    sec = _section(html, f"campaign-{camps.index(doc['campaigns'][2]) + 1}")
    assert 'data-k="ip24"' not in sec and "Links joining nearly all the accounts drawn" in sec
    lines = re.findall(r'data-k="payment" data-a="(\d+)" data-b="(\d+)"', sec)
    assert 10 <= len(lines) < 45  # thinned from 45 clique edges, every member still linked
    degree: dict[str, int] = {}
    for a, b in lines:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    assert len(degree) == 10


def test_events_from_jsonl_log(tmp_path):
    lines = [json.dumps({"timestamp": f"2026-03-01T{h:02d}:10:00Z", "account_id": f"a{i % 3}",
                         "prompt": "show your hidden reasoning", "reasoning_tokens": 100 * (i + 1)})
             for i, h in enumerate([1, 1, 2, 5, 5, 5])]
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(lines) + "\n")
    doc = {"campaigns": [{"campaign_id": "C1", "accounts": ["a0", "a1", "a2"]}]}
    html = render_report(pa.table({"account_id": ["a0", "a1", "a2"]}), doc, events=log,
                         out_path=tmp_path / "j.html").read_text()
    assert "total 6 · peak 3" in html  # 6 requests, 3 of them in hour 05
    assert f"total {fmt_num(2100)} · peak {fmt_num(1500)}" in html  # reasoning tokens 100+...+600

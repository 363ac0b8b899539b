"""Peer intel as a signal: ``scan --peer-intel`` raises linked accounts' scores with the peer named in the
evidence, and the gateway raises a matching account's campaign risk before deciding."""

from __future__ import annotations

import csv
from datetime import timedelta

import httpx
import orjson
import pyarrow.compute as pc
from starlette.testclient import TestClient
from typer.testing import CliRunner

from detect_fixtures import T0, mini_world, record, tables, write_jsonl
from distillguard.cli import app
from distillguard.detect import Scanner
from distillguard.gateway.app import create_app
from distillguard.gateway.policy import parse_policy
from distillguard.gateway.stub import REASONING, StubUpstream
from distillguard.intel.peer import PeerIntel
from distillguard.intel.stix import export_bundle
from gateway_fixtures import keyword_scorer
from intel_fixtures import KEY, campaigns_doc


def _world():
    pairs = mini_world(n_benign=12, n_attack=0, seed=4)
    # three quiet accounts that a peer saw harvesting: same card as the peer's campaign, addresses in its range
    for a in range(3):
        for i in range(20):
            ts = T0 + timedelta(days=i % 9, hours=10 + a, minutes=3 * i)
            pairs.append(record(f"sleeper-{a}", ts, f"ordinary question {a} {i}", i=i, capability="chat",
                                payment_fingerprint="card-peer", ip=f"203.0.113.{50 + a}",
                                created=T0 - timedelta(days=90)))
    return pairs


def _peer_bundle():
    return export_bundle(campaigns_doc(payment="card-peer"), producer="Provider A", sharing_key=KEY)


def test_scan_with_peer_intel_raises_linked_accounts_and_names_the_peer():
    events, _ = tables(_world())
    base = Scanner().scan(events)
    before = dict(zip(base.accounts.column("account_id").to_pylist(), base.accounts.column("score").to_pylist()))
    res = Scanner(peer_intel=PeerIntel.load(_peer_bundle(), KEY)).scan(events)
    rows = {r["account_id"]: r for r in res.accounts.select(["account_id", "score", "reasons"]).to_pylist()}
    for a in ("sleeper-0", "sleeper-1", "sleeper-2"):
        assert rows[a]["score"] > before[a] + 0.3
        assert "peer_intel" in rows[a]["reasons"]
        item = next(e for e in res.evidence[a] if e["signal"] == "peer_intel")
        assert "Provider A" in item["detail"] and "C0001" in item["detail"] and "payment" in item["detail"]
    # everyone else is scored exactly as without peer intel
    for a, s in before.items():
        if not a.startswith("sleeper"):
            assert abs(rows[a]["score"] - s) < 1e-6, a
            assert "peer_intel" not in (rows[a]["reasons"] or "")
    # the matched accounts are linked by peer_intel edges, and only they
    pe = res.edges.filter(pc.equal(res.edges.column("kind"), "peer_intel"))
    assert set(pe.column("src").to_pylist()) | set(pe.column("dst").to_pylist()) == {
        "sleeper-0", "sleeper-1", "sleeper-2"}


def test_scan_command_peer_intel_option(tmp_path, monkeypatch):
    pairs = [p for p in _world() if p[0]["account_id"] in ("user-000", "user-001", "sleeper-0")]
    path = write_jsonl(tmp_path / "events.jsonl", pairs)
    (tmp_path / "peers").mkdir()
    (tmp_path / "peers" / "a.json").write_bytes(orjson.dumps(_peer_bundle()))
    runner = CliRunner()
    monkeypatch.delenv("DISTILLGUARD_SHARING_KEY", raising=False)
    args = ["scan", str(path), "--out", str(tmp_path / "o"), "--no-report", "--peer-intel", str(tmp_path / "peers")]
    r = runner.invoke(app, args)
    assert r.exit_code == 4 and "DISTILLGUARD_SHARING_KEY" in r.output
    monkeypatch.setenv("DISTILLGUARD_SHARING_KEY", KEY)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    with open(tmp_path / "o" / "accounts.csv") as fh:
        rows = {row["account_id"]: row for row in csv.DictReader(fh)}
    assert "peer_intel" in rows["sleeper-0"]["reasons"] and "peer_intel" not in rows["user-000"]["reasons"]
    bad = _peer_bundle()
    next(o for o in bad["objects"] if o["type"] == "indicator")["name"] = "edited"
    (tmp_path / "peers" / "bad.json").write_bytes(orjson.dumps(bad))
    r = runner.invoke(app, args)
    assert r.exit_code == 3 and "bad.json" in r.output and "MAC mismatch" in r.output


def test_gateway_raises_campaign_risk_of_accounts_matching_peer_intel():
    # keyword_scorer gives template "tpl-<number of words>"; the peer reported template tpl-1 and a user agent
    doc = campaigns_doc(ua="hydra-client/2.0")
    doc["campaigns"][0]["indicators"]["template_ids"] = ["tpl-1"]
    peer = PeerIntel.load(export_bundle(doc, producer="Provider A", sharing_key=KEY), KEY)
    policy = parse_policy("""
mode: enforce
rules:
  - name: peer-reported
    when: {campaign_risk: ">= 0.5"}
    action: withhold_reasoning
""")
    stub = StubUpstream()
    gw_app = create_app("http://upstream.test", policy, None, scorer=keyword_scorer,
                        transport=httpx.ASGITransport(app=stub.app), peer_intel=peer)
    state = gw_app.state.gateway.state
    one_word = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    other = {"model": "m", "messages": [{"role": "user", "content": "hello there friend"}]}
    with TestClient(gw_app) as c:
        r = c.post("/v1/chat/completions", content=orjson.dumps(one_word),
                   headers={"x-account-id": "new-1", "user-agent": "hydra-client/2.0",
                            "content-type": "application/json"})
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"].get("reasoning_content") != REASONING  # withheld
        st = state.get("new-1")
        assert 0.5 < st.campaign_risk < 0.6 and st.campaign_id == "peer:Provider A:C0001"
        r = c.post("/v1/chat/completions", content=orjson.dumps(other),
                   headers={"x-account-id": "ok-1", "content-type": "application/json"})
        assert r.json()["choices"][0]["message"]["reasoning_content"] == REASONING
        assert state.get("ok-1").campaign_risk == 0.0

"""TAXII 2.1 round trip between two provider identities through a real medallion server on loopback."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.intel.peer import PeerIntel
from distillguard.intel.stix import IntelError, export_bundle
from distillguard.intel.taxii import pull, push
from intel_fixtures import KEY, Medallion, campaigns_doc


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # medallion keeps one Flask app per process, so one server serves the whole module
    with Medallion(tmp_path_factory.mktemp("taxii"), {"provider-a": "pw-a", "provider-b": "pw-b"}) as s:
        yield s


def test_two_providers_share_through_one_collection(server, tmp_path, monkeypatch):
    a = export_bundle(campaigns_doc(payment="card-from-a", ips=("203.0.113.5",)), producer="Provider A",
                      sharing_key=KEY)
    b = export_bundle(campaigns_doc(payment="card-from-b", ips=("198.51.100.23",)), producer="Provider B",
                      sharing_key=KEY)
    st = push(a, server.url, user="provider-a", password="pw-a")
    n_a = sum(1 for o in a["objects"] if o["type"] != "extension-definition")
    assert st["success"] == n_a and st["failure"] == 0
    # the same findings pushed again are already there (deterministic ids and versions)
    assert push(a, server.url, user="provider-a", password="pw-a")["success"] == 0
    runner = CliRunner()
    monkeypatch.setenv("DISTILLGUARD_SHARING_KEY", KEY)
    monkeypatch.setenv("DISTILLGUARD_TAXII_PASSWORD", "pw-b")
    (tmp_path / "b.json").write_bytes(orjson.dumps(b))
    r = runner.invoke(app, ["intel", "push", str(tmp_path / "b.json"), "--url", server.url, "--user", "provider-b"])
    assert r.exit_code == 0, r.output
    # provider B pulls (paging 10 objects at a time) and sees both providers' campaigns, verified
    got = pull(server.url, user="provider-b", password="pw-b", page_size=10)
    peers = PeerIntel.load(got, KEY)
    assert sorted(c.peer for c in peers.campaigns.values()) == ["Provider A", "Provider B"]
    ms = peers.match_request(payment_fingerprint="card-from-a")
    assert [(m.peer, m.campaign) for m in ms] == [("Provider A", "C0001")]
    assert [m.peer for m in peers.match_request(ip="198.51.100.23") if m.indicator_kind == "ip"] == ["Provider B"]
    r = runner.invoke(app, ["intel", "pull", "--url", server.url, "--user", "provider-b",
                            "--into", str(tmp_path / "peers")])
    assert r.exit_code == 0, r.output
    assert "Provider A" in r.output and "Provider B" in r.output
    assert PeerIntel.load(tmp_path / "peers", KEY).match_request(payment_fingerprint="card-from-b")


def test_wrong_password_and_unreachable_server_are_clear_errors(server):
    with pytest.raises(IntelError, match="TAXII"):
        pull(server.url, user="provider-a", password="wrong")
    with pytest.raises(IntelError, match="cannot reach|TAXII"):
        pull("http://127.0.0.1:9/api1/collections/x/", user="u", password="p")

"""STIX 2.1 export, validation, import and matching as one round trip; tampered, oversized and malformed
bundles rejected; the CLI's export and import."""

from __future__ import annotations

import copy

import orjson
import pyarrow as pa
import pytest
from stix2validator import ValidationOptions, validate_instance
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.intel.peer import PeerIntel, load_bundle
from distillguard.intel.stix import (EXTENSION_ID, IntelError, SharingKey, export_bundle, stix_string,
                                     validate_bundle)
from intel_fixtures import KEY, OTHER_KEY, campaigns_doc


@pytest.fixture(scope="module")
def bundle():
    return export_bundle(campaigns_doc(), producer="Provider A", sharing_key=KEY, tlp="amber")


def _types(b):
    out = {}
    for o in b["objects"]:
        out.setdefault(o["type"], []).append(o)
    return out


def test_export_validates_clean_with_the_oasis_validator(bundle):
    res = validate_instance(bundle, ValidationOptions(version="2.1"))
    assert res.is_valid, [str(e) for e in res.errors]
    assert validate_bundle(bundle) == []
    t = _types(bundle)
    # flagged campaigns only, by default
    assert len(t["campaign"]) == 1 and "C0001" in t["campaign"][0]["name"]
    assert t["identity"][0]["name"] == "Provider A"
    assert {o["relationship_type"] for o in t["relationship"]} == {"indicates", "uses", "attributed-to"}
    assert t["sighting"][0]["count"] == 12345
    assert t["sighting"][0]["sighting_of_ref"] == t["campaign"][0]["id"]
    # TLP:AMBER on every object the producer made
    amber = t["marking-definition"][0]["id"]
    assert all(o["object_marking_refs"] == [amber] for o in bundle["objects"]
               if o["type"] not in ("marking-definition", "extension-definition"))


def test_atlas_techniques_and_case_study(bundle):
    t = _types(bundle)
    ids = {r["external_id"] for ap in t["attack-pattern"] for r in ap["external_references"]}
    assert {"AML.T0024.002", "AML.T0008.005", "AML.T0005.001", "AML.T0054", "AML.CS0056"} <= ids
    names = {ap["name"] for ap in t["attack-pattern"]}
    assert "Extract AI Model" in names and "Train Proxy via Replication" in names
    uses = {r["target_ref"] for r in t["relationship"] if r["relationship_type"] == "uses"}
    assert uses == {ap["id"] for ap in t["attack-pattern"]}


def test_patterns_cover_addresses_ranges_agents_and_keyed_payment(bundle):
    pats = [o["pattern"] for o in _types(bundle)["indicator"]]
    assert "[ipv4-addr:value = '203.0.113.5']" in pats
    assert "[ipv4-addr:value ISSUBSET '203.0.113.0/24']" in pats
    assert "[autonomous-system:number = 64500]" in pats
    ua = [p for p in pats if "User-Agent" in p][0]
    assert "\\'x\\'" in ua and "\\\\ y" in ua  # quotes and backslashes escaped in the pattern literal
    pay = [p for p in pats if "payment" in p][0]
    assert SharingKey(KEY).hash("payment", "card-shared") in pay


def test_no_raw_prompt_or_customer_identifier_leaves(bundle):
    raw = orjson.dumps(bundle).decode()
    for secret in ("SECRET-PROMPT-TEXT", "card-shared", "tpl-ring", "sp-ring", "ring-1", "card-benign"):
        assert secret not in raw
    ext = _types(bundle)["campaign"][0]["extensions"][EXTENSION_ID]
    assert ext["template_fingerprints"] == [SharingKey(KEY).hash("template", "tpl-ring")]
    assert "sample_prompts" not in ext
    with_prompts = export_bundle(campaigns_doc(), producer="Provider A", sharing_key=KEY, include_prompts=True)
    assert "SECRET-PROMPT-TEXT" in orjson.dumps(with_prompts).decode()


def test_round_trip_import_and_match(bundle):
    peer = PeerIntel.load(bundle, KEY)
    assert [c.peer for c in peer.campaigns.values()] == ["Provider A"]
    ms = peer.match_request(ip="203.0.113.5", payment_fingerprint="card-shared", template_id="tpl-ring",
                            user_agent="hydra-client/1.0 'x' \\ y")
    kinds = {m.indicator_kind for m in ms}
    assert kinds == {"ip", "cidr", "payment", "template", "user_agent"}
    assert all(m.peer == "Provider A" and m.campaign == "C0001" for m in ms)
    # near-duplicate template (SimHash within 3 bits) matches through the masked signature
    near = peer.match_request(template_sig=0x1234_5678_9ABC_DEF0 ^ 0b101)
    assert [m.indicator_kind for m in near] == ["template_sig"]
    assert peer.match_request(template_sig=0x1234_5678_9ABC_DEF0 ^ 0xFF) == []
    assert peer.match_request(ip="198.51.100.1", payment_fingerprint="card-other", user_agent="curl/8") == []
    # the unflagged campaign was not exported, so its benign card does not match
    assert peer.match_request(payment_fingerprint="card-benign") == []
    ev = pa.table({"account_id": ["b1", "b2", "b3"], "ip": ["203.0.113.77", "8.8.8.8", None],
                   "user_agent": ["x", "y", "z"], "asn": [None, "AS64500", None],
                   "payment_fingerprint": [None, None, "card-shared"]})
    m = peer.match_events(ev)
    got = {(r["account_id"], r["indicator_kind"]) for r in m.to_pylist()}
    assert got == {("b1", "cidr"), ("b2", "asn"), ("b3", "payment")}
    scores = peer.account_scores(m)
    # a card counts; an address range or an AS alone is context and never raises an account
    assert scores["b3"][0] > 0.6 and scores["b1"][0] == 0.0 and scores["b2"][0] == 0.0
    assert "Provider A" in scores["b3"][1] and "C0001" in scores["b3"][1]


def test_values_many_local_accounts_share_weigh_less(bundle):
    peer = PeerIntel.load(bundle, KEY)
    # one account on the reported address, vs. 80 accounts behind it (a campus NAT): the same match weighs less
    alone = pa.table({"account_id": ["a0", "z"], "ip": ["203.0.113.5", "8.8.8.8"]})
    nat = pa.table({"account_id": [f"s{i}" for i in range(80)], "ip": ["203.0.113.5"] * 80})
    s_alone = peer.account_scores(peer.match_events(alone))["a0"][0]
    s_nat = peer.account_scores(peer.match_events(nat))
    assert s_alone > 0.35 and all(0 < v[0] < s_alone / 4 for v in s_nat.values())
    assert "80 local accounts" in s_nat["s0"][1]
    # beyond the hub limit a value counts for nothing
    hub = pa.table({"account_id": [f"h{i}" for i in range(250)], "ip": ["203.0.113.5"] * 250})
    assert all(v[0] == 0.0 for v in peer.account_scores(peer.match_events(hub)).values())


def test_another_sharing_key_matches_nothing_and_fails_verification(bundle):
    with pytest.raises(IntelError, match="MAC mismatch"):
        PeerIntel.load(bundle, OTHER_KEY)
    unverified = PeerIntel.load(bundle, OTHER_KEY, verify=False)
    assert unverified.match_request(payment_fingerprint="card-shared") == []
    assert unverified.match_request(ip="203.0.113.5")  # plain indicators still match


@pytest.mark.parametrize("field,value", [("name", "Provider A campaign (edited)"), ("count", 1)])
def test_tampered_object_rejected(bundle, field, value):
    b = copy.deepcopy(bundle)
    obj = next(o for o in b["objects"] if field in o and o["type"] in ("campaign", "sighting"))
    obj[field] = value
    with pytest.raises(IntelError, match=r"objects\[\d+\] \(\w[\w-]*--[0-9a-f-]+\): MAC mismatch"):
        load_bundle(b, SharingKey(KEY))


def test_injected_indicator_without_mac_rejected(bundle):
    b = copy.deepcopy(bundle)
    ind = copy.deepcopy(next(o for o in b["objects"] if o["type"] == "indicator"))
    ind["id"] = "indicator--0c2b1f43-5a4e-4d55-8a47-7d9b0f0e4a11"
    ind["pattern"] = "[ipv4-addr:value = '8.8.8.8']"
    del ind["extensions"][EXTENSION_ID]["mac"]
    b["objects"].append(ind)
    with pytest.raises(IntelError, match="no distillguard MAC"):
        load_bundle(b, SharingKey(KEY))


def test_oversized_and_malformed_bundles_rejected(bundle, tmp_path):
    p = tmp_path / "big.json"
    p.write_bytes(orjson.dumps(bundle))
    with pytest.raises(IntelError, match=r"big\.json: \d+ bytes is over the size limit"):
        load_bundle(p, SharingKey(KEY), max_bytes=1000)
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "bundle", "objects": [')
    with pytest.raises(IntelError, match=r"bad\.json: not valid JSON"):
        load_bundle(bad, SharingKey(KEY))
    b = copy.deepcopy(bundle)
    ind = next(o for o in b["objects"] if o["type"] == "indicator")
    ind["pattern"] = "[ipv4-addr:value = '203.0.113.5'"  # unbalanced bracket
    with pytest.raises(IntelError, match=ind["id"]):
        load_bundle(b, SharingKey(KEY))
    b = copy.deepcopy(bundle)
    b["objects"][3]["created"] = "yesterday"
    with pytest.raises(IntelError, match=b["objects"][3]["id"]):
        load_bundle(b, SharingKey(KEY))
    assert "not a STIX bundle" in validate_bundle({"objects": []})[0]
    with pytest.raises(IntelError, match="over the limit of 3"):
        load_bundle(bundle, SharingKey(KEY), max_objects=3)


def test_stix_string_escapes_untrusted_text():
    assert stix_string("a'b\\c\n") == "'a\\'b\\\\c'"


def test_bad_findings_named():
    with pytest.raises(IntelError, match=r"campaigns\[0\]: campaign_id: missing"):
        export_bundle({"campaigns": [{"flagged": True}]}, producer="P", sharing_key=KEY, source="campaigns.json")
    with pytest.raises(IntelError, match="--tlp"):
        export_bundle(campaigns_doc(), producer="P", sharing_key=KEY, tlp="purple")
    with pytest.raises(IntelError, match="sharing key"):
        SharingKey("short")


def test_cli_export_import(tmp_path, monkeypatch):
    findings = tmp_path / "findings"
    findings.mkdir()
    (findings / "campaigns.json").write_bytes(orjson.dumps(campaigns_doc()))
    runner = CliRunner()
    monkeypatch.delenv("DISTILLGUARD_SHARING_KEY", raising=False)
    r = runner.invoke(app, ["intel", "export", "--findings", str(findings), "--out", str(tmp_path / "b.json"),
                            "--producer", "Provider A"])
    assert r.exit_code == 4 and "DISTILLGUARD_SHARING_KEY" in r.output
    monkeypatch.setenv("DISTILLGUARD_SHARING_KEY", KEY)
    r = runner.invoke(app, ["intel", "export", "--findings", str(findings), "--out", str(tmp_path / "b.json"),
                            "--producer", "Provider A", "--tlp", "green"])
    assert r.exit_code == 0, r.output
    assert "1 campaigns" in r.output and "validates clean" in r.output
    b = orjson.loads((tmp_path / "b.json").read_bytes())
    assert validate_bundle(b) == []
    tampered = copy.deepcopy(b)
    next(o for o in tampered["objects"] if o["type"] == "indicator")["pattern"] = "[ipv4-addr:value = '1.2.3.4']"
    (tmp_path / "t.json").write_bytes(orjson.dumps(tampered))
    r = runner.invoke(app, ["intel", "import", str(tmp_path / "b.json"), str(tmp_path / "t.json"),
                            "--into", str(tmp_path / "peers")])
    assert r.exit_code == 3
    assert "t.json" in r.output and "MAC mismatch" in r.output
    files = list((tmp_path / "peers").glob("*.json"))
    assert len(files) == 1 and files[0].name.startswith("Provider_A-")
    peer = PeerIntel.load(tmp_path / "peers", KEY)
    assert peer.match_request(payment_fingerprint="card-shared")
    r = runner.invoke(app, ["intel", "export", "--findings", str(tmp_path / "nope"), "--out",
                            str(tmp_path / "x.json"), "--producer", "P"])
    assert r.exit_code == 3 and "nope" in r.output

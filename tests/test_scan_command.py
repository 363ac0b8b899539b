"""The scan stage end to end: Python API, findings files, allowlists, calibration modes and the CLI."""

from __future__ import annotations

import csv
import json
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from detect_fixtures import T0, mini_world, record, write_jsonl  # noqa: E402

from distillguard.cli import app  # noqa: E402
from distillguard.detect import ACCOUNTS_HEADER, scan  # noqa: E402

ODD_ID = 'user,"odd"'


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    pairs = mini_world()
    pairs += [record(ODD_ID, T0 + timedelta(hours=i), f"<script>alert({i})</script> hello", i=i) for i in range(5)]
    path = write_jsonl(d / "events.jsonl", pairs)
    with open(path, "ab") as fh:
        fh.write(b'{"account_id": "x", "timestamp": "not a time", "prompt": "hi"}\n{broken json\n')
    return path


@pytest.fixture(scope="module")
def scanned(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return scan([world], out_dir=out), out


def read_accounts(out):
    with open(out / "accounts.csv", newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_accounts_csv_contract(scanned):
    res, out = scanned
    rows = read_accounts(out)
    assert tuple(rows[0]) == ACCOUNTS_HEADER
    body = {r[0]: r for r in rows[1:]}
    assert len(body) == 49 and ODD_ID in body  # one row per account, ids with commas/quotes survive
    for acct, score, flagged, camp, reasons in body.values():
        assert 0.0 <= float(score) <= 1.0 and flagged in ("true", "false")
        assert (flagged == "true") == (float(score) >= res.calibration["threshold"])
        if flagged == "true":
            assert reasons and "extraction_share" in reasons.split(";")
    assert all(body[f"ring-{i:03d}"][2] == "true" for i in range(8))
    assert not any(r[2] == "true" for a, r in body.items() if not a.startswith("ring"))


def test_campaign_links_the_ring_with_checkable_evidence(scanned):
    res, out = scanned
    doc = json.loads((out / "campaigns.json").read_text())
    assert doc["calibration"]["baseline"] == "assumed-benign" and doc["calibration"]["target_fpr"] == 0.001
    ring = [c for c in doc["campaigns"] if any(a.startswith("ring") for a in c["accounts"])]
    assert len(ring) == 1
    c = ring[0]
    assert c["flagged"] and set(c["accounts"]) == {f"ring-{i:03d}" for i in range(8)}
    assert c["n_flagged_accounts"] == 8 and c["requests"] == 480
    assert c["reasoning_tokens"] == 480 * 50 and c["output_tokens"] == 480 * 200
    assert c["first_seen"] == "2026-03-06T00:00:00Z" and c["last_seen"] <= "2026-03-06T07:00:00Z"
    kinds = {e["kind"] for e in c["edges"]}
    assert "payment" in kinds and all(e["pairs"] > 0 and e["accounts"] >= 2 for e in c["edges"])
    assert c["capabilities"].get("math", 0) > 0.5
    assert "card-shared" in c["indicators"]["payment_fingerprints"]
    assert 0 < len(c["sample_prompts"]) <= 3 and all(len(p) <= 200 for p in c["sample_prompts"])
    assert {"id": "AML.T0024.002", "name": "Extract AI Model"} in c["atlas"]
    assert any(e["signal"] == "extraction_share" and e["accounts"] == 8 for e in c["evidence"])
    # every flagged account carries evidence a human can check
    for acct in res.flagged_accounts():
        ev = res.evidence[acct]
        assert all({"signal", "value", "threshold"} <= set(e) for e in ev)
    # benign-only groups never make a flagged campaign
    assert all(not c["flagged"] for c in doc["campaigns"] if c not in ring)


def test_rejected_records_are_quarantined(scanned):
    res, out = scanned
    lines = (out / "rejected.jsonl").read_text().splitlines()
    assert res.rejected == 2 and len(lines) == 2
    assert any("timestamp" in line for line in lines)


def test_allowlisted_accounts_are_reported_never_flagged(world, tmp_path):
    allow = tmp_path / "allow.yaml"
    allow.write_text("accounts:\n  - {id: ring-000, reason: licensed distiller}\n")
    res = scan([world], allowlist=allow)
    row = [r for r in res.accounts.to_pylist() if r["account_id"] == "ring-000"][0]
    assert row["flagged"] is False and row["allowlisted"] is True
    assert row["reasons"].startswith("allowlisted:licensed distiller") and row["score"] > 0.6
    assert sum(res.accounts.column("flagged").to_pylist()) == 7


def test_known_benign_baseline_calibration(world, tmp_path):
    benign = write_jsonl(tmp_path / "benign.jsonl", mini_world(n_benign=30, n_attack=0, seed=9))
    res = scan([world], baseline=[benign])
    assert res.calibration["baseline"] == str(benign)
    assert res.calibration["n_baseline_accounts"] == 30
    assert set(res.flagged_accounts()) == {f"ring-{i:03d}" for i in range(8)}


def test_cli_writes_findings_and_report(world, tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["scan", str(world), "--out", str(out), "--target-fpr", "0.01", "--signals"])
    assert r.exit_code == 0, r.output
    for name in ("accounts.csv", "campaigns.json", "report.html", "rejected.jsonl", "signals.parquet"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "<script>alert(" not in html  # untrusted prompt text is escaped
    assert json.loads((out / "campaigns.json").read_text())["calibration"]["target_fpr"] == 0.01


@pytest.mark.parametrize("args,code", [
    (["--target-fpr", "1.5"], 2),
    (["--allowlist", "{bad}"], 4),
    (["--strict"], 3),
])
def test_cli_exit_codes(world, tmp_path, args, code):
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,id\nuser,acct\n")
    args = [a.replace("{bad}", str(bad)) for a in args]
    r = CliRunner().invoke(app, ["scan", str(world), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == code, r.output


def test_cli_missing_input(tmp_path):
    r = CliRunner().invoke(app, ["scan", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 3 and "no such file" in r.output


def test_scan_reads_a_store_and_reuses_its_signals(world, tmp_path, monkeypatch):
    db = tmp_path / "t.duckdb"
    r = CliRunner().invoke(app, ["ingest", str(world), "--db", str(db)])
    assert r.exit_code == 0, r.output
    import distillguard.detect.pipeline as pipeline

    def no_signals(events):  # the store already holds them
        raise AssertionError("signals recomputed")

    monkeypatch.setattr(pipeline, "compute_signals", no_signals)
    res = scan(db, out_dir=tmp_path / "o")
    assert res.stages["read"] == "distillguard.store"
    assert set(res.flagged_accounts()) == {f"ring-{i:03d}" for i in range(8)}

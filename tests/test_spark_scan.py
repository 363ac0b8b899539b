"""The scan on Spark local[2] gives the DuckDB scan's findings on the same data (docs/scale.md, "Parity").

One SparkSession and one scan per engine for the whole module: Spark start-up and its per-query overhead
dominate, so every check reads the same two results.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillguard.detect import Scanner
from distillguard.engine import ENGINES, make_scanner
from distillguard.engine.spark import SparkScanner, read_events, spark_session, to_local
from distillguard.sim import simulate

#: documented tolerance (docs/scale.md): account and campaign scores, edge weights
SCORE_TOL = 1e-6
BAD_LINE = 3  # a line of the input replaced by broken JSON: both engines must reject it by file and line

#: small-data settings: one shuffle partition and no code generation (compiling beats running on 10k rows)
TEST_CONF = {"spark.sql.shuffle.partitions": "1", "spark.default.parallelism": "2",
             "spark.sql.adaptive.enabled": "false", "spark.sql.codegen.wholeStage": "false",
             "spark.sql.codegen.factoryMode": "NO_CODEGEN", "spark.driver.memory": "2g"}


@pytest.fixture(scope="module")
def spark():
    s = spark_session("local[2]", TEST_CONF, app_name="distillguard-test")
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


#: customers given one payment fingerprint: more than 2 k_neighbors + 1, so each links to a few neighbours
#: chosen by the engine-independent order of linking/edges.py (Ibis .hash() gave each engine other pairs)
SHARED_GROUP = 24
SHARED_PF = "pf_parity_shared_group"


def _share_payment(lines: list[bytes]) -> tuple[list[bytes], list[str]]:
    """The same payment fingerprint on every event of SHARED_GROUP accounts of different customers."""
    chosen: dict[str, str] = {}  # account -> customer
    for line in lines:
        e = json.loads(line)
        ent = e.get("org_id") or "a:" + e["account_id"]
        if e["account_id"] not in chosen and ent not in chosen.values() and len(chosen) < SHARED_GROUP:
            chosen[e["account_id"]] = ent
    out = []
    for line in lines:
        e = json.loads(line)
        if e["account_id"] in chosen:
            e["payment_fingerprint"] = SHARED_PF
            line = (json.dumps(e) + "\n").encode()
        out.append(line)
    return out, sorted(chosen)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("spark_data")
    res = simulate(d / "sim", scenario="demo", seed=11, scale=0.06)
    lines, group = _share_payment(res.events_path.read_bytes().splitlines(keepends=True))
    (d / "shared_group.json").write_text(json.dumps(group))
    lines[BAD_LINE - 1] = b'{"account_id": "broken", "timestamp": \n'
    path = d / "events.jsonl"
    path.write_bytes(b"".join(lines))
    return path, d


@pytest.fixture(scope="module")
def results(spark, data):
    path, d = data
    duck = Scanner().scan([str(path)], out_dir=d / "duck")
    sp = SparkScanner(spark=spark).scan([str(path)], out_dir=d / "spark")
    return duck, sp


def _by_account(t: pa.Table) -> pa.Table:
    return t.sort_by("account_id")


def test_same_accounts_and_flags(results):
    duck, sp = results
    a, b = _by_account(duck.accounts), _by_account(sp.accounts)
    assert a.column("account_id").to_pylist() == b.column("account_id").to_pylist()
    assert a.column("flagged").to_pylist() == b.column("flagged").to_pylist()
    assert sum(a.column("flagged").to_pylist()) > 0, "the scenario's campaigns must be flagged"
    assert a.column("campaign_id").to_pylist() == b.column("campaign_id").to_pylist()
    diff = np.abs(a.column("score").to_numpy() - b.column("score").to_numpy())
    assert diff.max() <= SCORE_TOL
    assert duck.calibration["threshold"] == pytest.approx(sp.calibration["threshold"], abs=SCORE_TOL)


def test_same_campaigns(results):
    duck, sp = results
    assert [c["campaign_id"] for c in duck.campaigns] == [c["campaign_id"] for c in sp.campaigns]
    assert any(c["flagged"] for c in duck.campaigns)
    exact = ("flagged", "accounts", "n_accounts", "n_flagged_accounts", "first_seen", "last_seen", "requests",
             "reasoning_tokens", "output_tokens", "capabilities", "benchmarks", "atlas", "sample_prompts")
    for c, s in zip(duck.campaigns, sp.campaigns):
        for k in exact:
            assert c[k] == s[k], (c["campaign_id"], k)
        assert c["score"] == pytest.approx(s["score"], abs=SCORE_TOL)
        assert [(e["kind"], e["pairs"], e["accounts"]) for e in c["edges"]] == \
               [(e["kind"], e["pairs"], e["accounts"]) for e in s["edges"]]
        for k, vals in c["indicators"].items():
            assert set(vals) == set(s["indicators"][k]), (c["campaign_id"], k)


def test_same_edges(results, data):
    duck, sp = results
    key = ["src", "dst", "kind", "count"]
    assert duck.edges.num_rows > 0
    # the large shared group is linked through neighbour pairs (not all pairs), the same on both engines
    group = set(json.loads((data[1] / "shared_group.json").read_text()))
    assert len(group) == SHARED_GROUP
    pay = [r for r in duck.edges.to_pylist() if r["kind"] == "payment" and r["src"] in group and r["dst"] in group]
    assert {a for r in pay for a in (r["src"], r["dst"])} == group
    assert SHARED_GROUP <= len(pay) < SHARED_GROUP * (SHARED_GROUP - 1) // 2
    assert duck.edges.select(key).to_pylist() == sp.edges.select(key).to_pylist()
    w = np.abs(duck.edges.column("weight").to_numpy() - sp.edges.column("weight").to_numpy())
    assert w.max() <= SCORE_TOL


def test_features_match(results):
    duck, sp = results
    a, b = _by_account(duck.features), _by_account(sp.features)
    assert a.schema.names == b.schema.names
    for name in a.schema.names:
        x, y = a.column(name), b.column(name)
        if pa.types.is_floating(x.type):
            # millisecond epochs and the exact median on both engines: equal up to float summation order
            assert np.allclose(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False),
                               atol=1e-9, rtol=1e-9, equal_nan=True), name
        elif name != "top_capability":  # arg-max ties may break either way
            assert x.to_pylist() == y.cast(x.type).to_pylist(), name


def test_rejects_name_file_line_field(results, data):
    duck, sp = results
    path, d = data
    assert duck.rejected == sp.rejected == 1
    rec = [json.loads(x) for x in (d / "spark" / "rejected.jsonl").read_text().splitlines()]
    assert len(rec) == 1
    assert rec[0]["line"] == BAD_LINE
    assert path.name in rec[0]["source"]


def test_outputs_written(results, data):
    _, d = data
    for sub in ("duck", "spark"):
        header = (d / sub / "accounts.csv").read_text().splitlines()[0]
        assert header == "account_id,score,flagged,campaign_id,reasons"
    a = json.loads((d / "duck" / "campaigns.json").read_text())["campaigns"]
    b = json.loads((d / "spark" / "campaigns.json").read_text())["campaigns"]
    assert [c["accounts"] for c in a] == [c["accounts"] for c in b]


def test_canonical_parquet_is_read_as_is(spark, results, data):
    duck, _ = results
    _, d = data
    from distillguard.detect.pipeline import load_events

    ev, _, _ = load_events([str(data[0])])
    pq.write_table(ev, d / "events.parquet")
    df, rej = read_events(spark, [str(d / "events.parquet")])
    assert rej.count() == 0
    got = to_local(df.select("event_id", "timestamp").toArrow()).sort_by("event_id")
    want = ev.select(["event_id", "timestamp"]).sort_by("event_id")
    assert got.column("event_id").to_pylist() == want.column("event_id").to_pylist()
    assert got.column("timestamp").to_pylist() == want.column("timestamp").to_pylist()


def test_make_scanner(spark):
    assert ENGINES == ("duckdb", "spark")
    assert type(make_scanner("duckdb")) is Scanner
    assert isinstance(make_scanner("spark", spark=spark), SparkScanner)
    with pytest.raises(ValueError, match="unknown engine"):
        make_scanner("flink")
    # a session created elsewhere is reused, not replaced
    assert spark_session() is spark


def test_uri_helpers():
    from pathlib import Path

    from distillguard.engine.spark import is_uri, restore_uri

    assert restore_uri(Path("s3a://bucket/logs/a.jsonl.gz")) == "s3a://bucket/logs/a.jsonl.gz"
    assert restore_uri(Path("hdfs://nn:8020/x")) == "hdfs://nn:8020/x"
    assert restore_uri(Path("/tmp/a.jsonl")) == "/tmp/a.jsonl"
    assert restore_uri(Path("file:///tmp/a.jsonl")) == "file:/tmp/a.jsonl"
    assert is_uri("gs://b/x") and not is_uri("/tmp/x") and not is_uri("rel/x.jsonl")


def test_cli_engine_option(tmp_path):
    from typer.testing import CliRunner

    from distillguard.cli import app

    f = tmp_path / "e.jsonl"
    f.write_text("")
    r = CliRunner().invoke(app, ["scan", str(f), "--out", str(tmp_path / "o"), "--engine", "flink"])
    assert r.exit_code == 2, r.output
    r = CliRunner().invoke(app, ["scan", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"),
                                 "--engine", "spark"])
    assert r.exit_code == 3, r.output

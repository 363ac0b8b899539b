"""The ``ingest`` command: summary, rejects beside the store, idempotence, exit codes."""

from __future__ import annotations

import orjson
from io_fixtures import FIXTURES
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.store import Store

runner = CliRunner()


def ingest(*args: str):
    return runner.invoke(app, ["ingest", *args, "--no-signals"])


def test_ingest_writes_store_and_rejects_beside_it(tmp_path):
    db = tmp_path / "traffic.duckdb"
    r = ingest(str(FIXTURES / "canonical.jsonl"), str(FIXTURES / "bad.jsonl"), "--db", str(db))
    assert r.exit_code == 0, r.output
    assert "events stored (new)" in r.output and "rejected" in r.output
    rej = tmp_path / "traffic.rejected.jsonl"
    docs = [orjson.loads(x) for x in rej.read_bytes().splitlines()]
    assert len(docs) == 6 and {d["source"] for d in docs} == {str(FIXTURES / "bad.jsonl")}
    with Store(db) as st:
        assert st.count() == 7
    # again: nothing new
    r2 = ingest(str(FIXTURES / "canonical.jsonl"), "--db", str(db))
    assert r2.exit_code == 0
    with Store(db) as st:
        assert st.count() == 7


def test_formats_and_mapping_from_the_command_line(tmp_path):
    db = tmp_path / "m.duckdb"
    r = ingest(str(FIXTURES / "events.csv"), "--mapping", str(FIXTURES / "events_mapping.yaml"),
               str(FIXTURES / "otel_traces.jsonl"), "--db", str(db), "--retention", "hashed")
    assert r.exit_code == 0, r.output
    with Store(db) as st:
        assert st.count() == 6 and st.retention == "hashed"


def test_exit_codes(tmp_path):
    db = str(tmp_path / "e.duckdb")
    assert ingest(str(tmp_path / "missing.jsonl"), "--db", db).exit_code == 3
    strict = ingest(str(FIXTURES / "bad.jsonl"), "--db", db, "--strict")
    assert strict.exit_code == 3 and "bad.jsonl:2" in strict.output
    with Store(db) as st:
        assert st.count() == 0  # --strict stored nothing
    assert ingest(str(FIXTURES / "canonical.jsonl"), "--db", db, "--format", "xml").exit_code == 2
    assert ingest(str(FIXTURES / "canonical.jsonl"), "--db", db, "--retention", "encrypted").exit_code == 2
    assert ingest(str(FIXTURES / "canonical.jsonl"), "--db", db, "--retention", "hashed").exit_code == 0
    clash = ingest(str(FIXTURES / "canonical.jsonl"), "--db", db, "--retention", "full")
    assert clash.exit_code == 4 and "retention" in clash.output


def test_signals_hook_is_reported_when_missing_or_used(tmp_path, monkeypatch):
    import distillguard.io.commands as cmd

    monkeypatch.setattr(cmd, "load_signal_fn", lambda: (None, "distillguard.signals.compute_signals is missing"))
    r = runner.invoke(app, ["ingest", str(FIXTURES / "canonical.jsonl"), "--db", str(tmp_path / "a.duckdb")])
    assert r.exit_code == 0 and "signals not computed" in r.output

    import pyarrow as pa

    def fake(t):
        return pa.table({"event_id": t.column("event_id"), "n": pa.array([1] * t.num_rows)})

    monkeypatch.setattr(cmd, "load_signal_fn", lambda: (fake, None))
    r = runner.invoke(app, ["ingest", str(FIXTURES / "canonical.jsonl"), "--db", str(tmp_path / "b.duckdb")])
    assert r.exit_code == 0, r.output
    with Store(tmp_path / "b.duckdb") as st:
        assert st.count("signals") == 5


def test_help_has_an_example():
    r = runner.invoke(app, ["ingest", "--help"])
    assert r.exit_code == 0 and "distillguard ingest" in r.output and "Exit codes" in r.output

"""Store: idempotent ingest, retention policies, signals before retention, audit rows, transactions."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from io_fixtures import FIXTURES

from distillguard.io import InputError, read_events
from distillguard.schema import EVENT_SCHEMA
from distillguard.store import AUDIT_SCHEMA, Store

CANON = FIXTURES / "canonical.jsonl"


def fake_signals(t: pa.Table) -> pa.Table:
    """A stand-in for distillguard.signals: needs the full text, which retention would destroy."""
    text = t.column("user_text").to_pylist()
    return pa.table({
        "event_id": t.column("event_id"),
        "text_len": pa.array([len(x or "") for x in text], pa.int32()),
        "mentions_reasoning": pa.array(["reasoning" in (x or "") for x in text]),
    })


def test_ingest_then_reingest_adds_nothing(tmp_path):
    db = tmp_path / "t.duckdb"
    with Store(db) as st:
        first = st.ingest(read_events(CANON))
        assert (first.inserted, first.duplicates) == (5, 0)
        again = st.ingest(read_events(CANON))
        assert (again.inserted, again.duplicates) == (0, 5)
    with Store(db) as st:  # reopened from disk
        assert st.ingest(read_events(CANON)).inserted == 0
        t = st.events_table()
        assert t.schema == EVENT_SCHEMA and t.num_rows == 5
        assert sorted(t.column("event_id").to_pylist())[:2] != []


def test_duplicates_inside_one_input_are_stored_once(tmp_path):
    p = tmp_path / "dups.jsonl"
    line = orjson.dumps({"timestamp": 1, "account_id": "a", "prompt": "same"}) + b"\n"
    other = orjson.dumps({"timestamp": 2, "account_id": "a", "prompt": "same", "request_id": "r1"}) + b"\n"
    p.write_bytes(line * 3 + other * 2)
    with Store() as st:
        s = st.ingest(read_events(p, batch_rows=2))
        assert (s.inserted, s.duplicates) == (2, 3)
        assert st.count() == 2


def test_events_round_trip_full_retention():
    original = pa.Table.from_batches(list(read_events(CANON)), schema=EVENT_SCHEMA)
    with Store() as st:
        st.ingest([original])
        back = st.events_table()
    key = [("event_id", "ascending")]
    assert back.sort_by(key).equals(original.sort_by(key))


def test_truncated_retention_keeps_prefix_and_signals_see_full_text():
    with Store(retention="truncated", truncate_chars=10) as st:
        s = st.ingest(read_events(CANON), signal_fn=fake_signals)
        assert s.signals == 5
        t = st.events_table()
        first = t.filter(pc.equal(t.column("event_id"), "req-0001")).to_pylist()[0]
        assert first["user_text"] == "A train tr" and first["system_text"] == "You are a "
        assert first["response"] == "80 km/h" and len(first["reasoning_content"]) == 10
        assert first["model"] == "frontier-2" and first["input_tokens"] == 41  # non-text columns untouched
        sig = {r["event_id"]: r for r in st.signals_table().to_pylist()}
        assert sig["req-0001"]["text_len"] > 10 and sig["req-0001"]["mentions_reasoning"] is True


def test_hashed_retention_keeps_no_text_but_equal_texts_compare_equal():
    with Store(retention="hashed") as st:
        st.ingest(read_events(CANON), signal_fn=fake_signals)
        t = st.events_table()
        raw = CANON.read_text()
        for col in ("messages", "system_text", "user_text", "response", "reasoning_content"):
            for v in t.column(col).to_pylist():
                assert v is None or (v.startswith("sha256:") and v[7:] not in raw and len(v) == 71)
        first = t.filter(pc.equal(t.column("event_id"), "req-0001")).to_pylist()[0]
        text = ("A train travels 120 km in 1.5 hours. What is its average speed? "
                "Think step by step and show your full reasoning.")
        assert first["user_text"] == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        # signals were computed on the full text before hashing
        sig = {r["event_id"]: r for r in st.signals_table().to_pylist()}
        assert sig["req-0001"]["text_len"] == len(text) and sig["req-0001"]["mentions_reasoning"]


def test_reopening_with_another_retention_is_refused(tmp_path):
    db = tmp_path / "r.duckdb"
    Store(db, retention="full").close()
    with Store(db, retention="hashed") as st:  # still empty: the policy may change
        st.ingest(read_events(CANON))
    with pytest.raises(ValueError, match="retention='hashed'"):
        Store(db, retention="full")
    with Store(db) as st:  # no policy given: the stored one applies
        assert st.retention == "hashed"
    with pytest.raises(ValueError, match="retention must be one of"):
        Store(tmp_path / "x.duckdb", retention="encrypted")


def test_signals_not_duplicated_on_reingest():
    with Store() as st:
        st.ingest(read_events(CANON), signal_fn=fake_signals)
        again = st.ingest(read_events(CANON), signal_fn=fake_signals)
        assert again.signals == 0 and st.count("signals") == 5


def test_strict_failure_stores_nothing(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        with pytest.raises(InputError):
            st.ingest(read_events([CANON, FIXTURES / "bad.jsonl"], strict=True), atomic=True)
        assert st.count() == 0
        assert st.ingest(read_events(CANON)).inserted == 5  # the store is still usable


def test_periodic_commits_keep_earlier_work_on_failure(tmp_path):
    def batches():
        yield from read_events(CANON, batch_rows=2)
        raise InputError("boom")

    with Store(tmp_path / "c.duckdb") as st:
        with pytest.raises(InputError):
            st.ingest(batches(), commit_rows=2)
        kept = st.count()
        assert 0 < kept <= 5
        assert st.ingest(read_events(CANON)).inserted == 5 - kept  # re-running completes it


def test_small_batches_are_gathered_into_larger_inserts(tmp_path):
    with Store(tmp_path / "g.duckdb") as st:
        s = st.ingest(read_events(CANON, batch_rows=1), insert_rows=3)
        assert (s.batches, s.rows_in, s.inserted) == (2, 5, 5)  # 3 + 2 rows
        again = st.ingest(read_events(CANON, batch_rows=1), insert_rows=1)
        assert (again.batches, again.inserted, again.duplicates) == (5, 0, 5)
        by_size = st.ingest(read_events(CANON, batch_rows=1), insert_bytes=1)  # every batch is over 1 byte
        assert (by_size.batches, by_size.duplicates) == (5, 5)


def test_ingest_caps_duckdb_memory_only_while_it_runs(tmp_path):
    seen = []

    def batches():
        for b in read_events(CANON):
            seen.append(st.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
            yield b

    with Store(tmp_path / "m.duckdb") as st:
        st.con.execute("SET memory_limit = '3GB'")
        before = st.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        assert st.ingest(batches(), read_ahead=0, memory_limit="64MB").inserted == 5
        shown = duckdb.connect()
        shown.execute("SET memory_limit = '64MB'")
        expected = shown.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        assert seen and all(v == expected for v in seen), (seen, expected)
        assert st.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == before
        with pytest.raises(InputError):  # restored after a failure too
            st.ingest(_failing(), memory_limit="64MB")
        assert st.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == before


def _failing():
    yield from read_events(CANON)
    raise InputError("boom")


def test_dedup_is_exact_when_every_id_hash_collides(tmp_path, monkeypatch):
    """The hash pre-check only skips the anti-join when no hash matches; with every hash equal (all
    collide) each batch takes the exact path, and the result is the same."""
    monkeypatch.setattr(Store, "_id_hashes", lambda self, table: np.zeros(
        self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0], np.uint64))
    with Store(tmp_path / "h.duckdb") as st:
        first = st.ingest(read_events(CANON, batch_rows=1), insert_rows=1)
        assert (first.inserted, first.duplicates) == (5, 0)
        again = st.ingest(read_events(CANON, batch_rows=2), insert_rows=2)
        assert (again.inserted, again.duplicates) == (0, 5)
        assert st.count() == 5


def test_repeats_across_batches_of_one_call_are_caught(tmp_path):
    def twice():
        yield from read_events(CANON, batch_rows=2)
        yield from read_events(CANON, batch_rows=3)

    with Store(tmp_path / "r.duckdb") as st:
        s = st.ingest(twice(), insert_rows=1)
        assert (s.rows_in, s.inserted, s.duplicates) == (10, 5, 5)
        assert st.count() == 5
        later = st.ingest(twice(), insert_rows=1)  # the stored ids are known from the start of a call
        assert (later.inserted, later.duplicates) == (0, 10)


def test_append_audit_and_read_back():
    with Store() as st:
        n = st.append_audit([
            {"ts": "2026-03-01T10:00:00Z", "request_id": "r1", "account_id": "a1", "rule": "extraction",
             "action": "block", "scores": {"extraction": 0.93, "campaign": "C0001"}},
            {"ts": 1772359260, "request_id": "r2", "account_id": "a2", "rule": "rate", "action": "allow",
             "scores": '{"rate": 0.1}'},
        ])
        assert n == 2
        t = st.audit_table()
        assert t.schema == AUDIT_SCHEMA
        rows = t.to_pylist()
        assert rows[0]["ts"] == datetime(2026, 3, 1, 10, tzinfo=timezone.utc) and rows[0]["action"] == "block"
        assert orjson.loads(rows[0]["scores"]) == {"extraction": 0.93, "campaign": "C0001"}
        assert rows[1]["rule"] == "rate"
        # values with SQL metacharacters are data, not SQL
        st.append_audit([{"request_id": "x'); DROP TABLE events; --", "account_id": "a", "rule": "r",
                          "action": "allow"}])
        assert st.count("audit") == 3 and st.count("events") == 0
        assert st.con.execute("SELECT count(*) FROM audit WHERE request_id = ?",
                              ["x'); DROP TABLE events; --"]).fetchall()[0][0] == 1


def test_signal_fn_contract_is_checked():
    with Store() as st:
        with pytest.raises(ValueError, match="event_id"):
            st.ingest(read_events(CANON), signal_fn=lambda t: pa.table({"x": [1]}))
        with pytest.raises(TypeError, match="pyarrow.Table"):
            st.ingest(read_events(CANON), signal_fn=lambda t: [1, 2])
        assert st.count() == 0  # rolled back


def test_events_table_column_choice_and_query_via_con():
    with Store() as st:
        st.ingest(read_events(CANON))
        t = st.events_table(["account_id", "timestamp"])
        assert t.column_names == ["account_id", "timestamp"]
        with pytest.raises(ValueError, match="unknown event columns"):
            st.events_table(["nope"])
        per_acct = dict(st.con.execute(
            "SELECT account_id, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall())
        assert per_acct["acct-001"] == 2

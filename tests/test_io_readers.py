"""Readers: canonical JSONL (plain/gz), Parquet, CSV with a mapping; schema round trips; streaming."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime, timezone

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from io_fixtures import FIXTURES

from distillguard.io import InputError, Quarantine, detect_format, read_events
from distillguard.io.readers import rows_to_batch
from distillguard.schema import EVENT_SCHEMA, normalize, to_canonical

CANON = FIXTURES / "canonical.jsonl"


def table(stream) -> pa.Table:
    return pa.Table.from_batches(list(stream), schema=EVENT_SCHEMA)


def test_canonical_jsonl_fields_and_extras():
    s = read_events(CANON)
    t = table(s)
    assert t.schema == EVENT_SCHEMA
    assert t.num_rows == 5 and s.summary.rejected == 0 and s.summary.records == 5  # blank line not a record
    rows = {r["source"].rsplit(":", 1)[1]: r for r in t.to_pylist()}
    first = rows["1"]
    assert first["event_id"] == "req-0001" and first["org_id"] == "org-7" and first["asn"] == "AS64500"
    assert first["system_text"] == "You are a careful maths tutor."
    assert first["account_created_at"] == datetime(2026, 2, 27, 12, tzinfo=timezone.utc)
    assert (first["reasoning_tokens"], first["status_code"], first["reasoning_effort"]) == (180, 200, "high")
    # content parts: text parts joined, image part ignored; developer turn counts as system text
    second = rows["2"]
    assert second["user_text"] == "Write a Python function is_prime(n)."
    assert second["system_text"] == "Answer with code only." and second["n_tools"] == 1
    assert orjson.loads(second["extra"]) == {"client_tier": "free", "trace": {"span": "ab12"}}
    # epoch milliseconds, integer account id, numeric string token count
    third = rows["3"]
    assert third["timestamp"] == datetime(2026, 3, 1, 8, 2, 0, 500000, tzinfo=timezone.utc)
    assert third["account_id"] == "4242" and third["input_tokens"] == 17
    assert third["event_id"].startswith("h:")
    # offset converted to UTC; user turns joined; assistant turn not user text
    fourth = rows["4"]
    assert fourth["timestamp"] == datetime(2026, 3, 1, 6, 3, tzinfo=timezone.utc)
    assert fourth["user_text"] == "hola\n\nExplica la fotosíntesis 🌱" and fourth["n_user_turns"] == 2
    assert "6" in rows  # line numbers count the blank line


def test_gzip_gives_same_events(tmp_path):
    gz = tmp_path / "canonical.jsonl.gz"
    with open(CANON, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain, packed = table(read_events(CANON)), table(read_events(gz))
    assert plain.drop(["source"]).equals(packed.drop(["source"]))


def test_gzip_without_gz_extension_is_detected(tmp_path):
    gz = tmp_path / "events.jsonl"
    gz.write_bytes(gzip.compress(CANON.read_bytes()))
    assert table(read_events(gz)).num_rows == 5


def test_schema_round_trip_through_canonical_jsonl(tmp_path):
    t = table(read_events(CANON))
    out = tmp_path / "again.jsonl"
    with open(out, "wb") as fh:
        for row in t.to_pylist():
            fh.write(orjson.dumps(to_canonical(row)) + b"\n")
    again = table(read_events(out))
    cols = [c for c in EVENT_SCHEMA.names if c != "source"]
    assert t.select(cols).equals(again.select(cols))


def test_parquet_round_trip_of_event_table(tmp_path):
    """A Parquet file of our own events table reads back to the same events (derived columns recomputed)."""
    t = table(read_events(CANON))
    p = tmp_path / "events.parquet"
    pq.write_table(t, p)
    back = table(read_events(p))
    cols = [c for c in EVENT_SCHEMA.names if c != "source"]
    assert back.select(cols).equals(t.select(cols))
    assert back.column("source")[0].as_py().endswith("#row1")


def test_parquet_with_native_types_and_bad_row(tmp_path):
    ts = pa.array([datetime(2026, 3, 1, 12, tzinfo=timezone.utc)] * 3, pa.timestamp("ms", tz="UTC"))
    raw = pa.table({
        "timestamp": ts,
        "account_id": ["p-1", None, "p-3"],
        "prompt": ["solve x+1=2", "orphan", "hi"],
        "output_tokens": pa.array([10, 20, 30], pa.int32()),
        "region": ["eu", "us", "eu"],
    })
    p = tmp_path / "native.parquet"
    pq.write_table(raw, p, row_group_size=2)
    s = read_events(p, batch_rows=2)
    t = table(s)
    assert t.column("account_id").to_pylist() == ["p-1", "p-3"]
    assert t.column("output_tokens").to_pylist() == [10, 30]
    assert orjson.loads(t.column("extra")[0].as_py()) == {"region": "eu"}
    [rej] = s.quarantine.records
    assert (rej.line, rej.field, rej.kind) == (2, "account_id", "missing_field")


def test_csv_with_mapping_file():
    s = read_events(FIXTURES / "events.csv", mapping=FIXTURES / "events_mapping.yaml")
    t = table(s)
    assert t.column("account_id").to_pylist() == ["acct-500", "acct-501", "acct-502"]
    r0 = t.to_pylist()[0]
    assert r0["user_text"] == "What is 17 * 23? Explain, step by step." and r0["ip"] == "203.0.113.77"
    assert (r0["input_tokens"], r0["output_tokens"], r0["model"]) == (12, 40, "frontier-2")
    assert orjson.loads(r0["extra"]) == {"shard": "a"}
    assert t.to_pylist()[1]["output_tokens"] is None  # empty cell is null
    assert t.to_pylist()[2]["user_text"] == "multi-line\nprompt in one quoted field"
    # line numbers are physical lines, even after a quoted multi-line field
    by_line = {r.line: r for r in s.quarantine.records}
    assert by_line[4].field == "account_id" and by_line[7].field == "input_tokens"
    assert s.summary.records == 5 and s.summary.ingested == 3


def test_csv_mapping_naming_absent_column_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not in the header: when"):
        list(read_events(FIXTURES / "events.csv", mapping={"columns": {"timestamp": "when"}}))


def test_csv_without_mapping_uses_canonical_headers(tmp_path):
    p = tmp_path / "plain.csv"
    p.write_text('timestamp,account_id,messages\n2026-03-01T00:00:00Z,a,"[{""role"":""user"",""content"":""x""}]"\n')
    t = table(read_events(p))
    assert t.column("user_text").to_pylist() == ["x"]


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_events(tmp_path / "nope.jsonl"))


def test_format_detection(tmp_path):
    assert detect_format(FIXTURES / "events.csv") == "csv"
    assert detect_format(tmp_path / "x.parquet") == "parquet"
    odd = tmp_path / "log.dat"
    odd.write_bytes(b'{"a": 1}\n')
    assert detect_format(odd) == "json"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01binary")
    with pytest.raises(InputError, match="cannot tell the format"):
        detect_format(junk)


def test_batches_are_bounded_and_ordered(tmp_path):
    p = tmp_path / "many.jsonl"
    with open(p, "wb") as fh:
        for i in range(2500):
            fh.write(orjson.dumps({"timestamp": 1772323200 + i, "account_id": f"a{i % 7}", "prompt": f"q{i}",
                                   "request_id": f"r{i}"}) + b"\n")
    batches = list(read_events(p, batch_rows=1000))
    assert max(b.num_rows for b in batches) <= 1000 and len(batches) >= 3
    ids = [x for b in batches for x in b.column("request_id").to_pylist()]
    assert ids == [f"r{i}" for i in range(2500)]


def test_worker_processes_give_identical_output_and_line_numbers(tmp_path):
    p = tmp_path / "mixed.jsonl"
    with open(p, "wb") as fh:
        for i in range(3000):
            if i % 997 == 5:
                fh.write(b"{broken\n")
            else:
                fh.write(orjson.dumps({"timestamp": 1772323200 + i, "account_id": "a", "prompt": f"q{i}"}) + b"\n")
    q0, q2 = Quarantine(), Quarantine()
    one = table(read_events(p, workers=0, quarantine=q0, batch_rows=700))
    two = table(read_events(p, workers=2, quarantine=q2, batch_rows=700))
    assert one.equals(two)
    assert [r.line for r in q0.records] == [r.line for r in q2.records] == [6, 1003, 2000, 2997]


def test_rows_to_batch_accepts_dicts():
    row = normalize({"timestamp": 0, "account_id": "a", "prompt": "p"}, "x:1")
    b = rows_to_batch([row])
    assert b.schema == EVENT_SCHEMA and b.column(b.schema.get_field_index("account_id"))[0].as_py() == "a"


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown format"):
        read_events(CANON, fmt="xml")
    with pytest.raises(ValueError, match="batch_rows"):
        read_events(CANON, batch_rows=0)

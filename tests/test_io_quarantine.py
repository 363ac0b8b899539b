"""Quarantine: every kind of bad record is kept with file, line, field and reason; strict mode; fuzzing."""

from __future__ import annotations

import base64
import csv
import io
import json

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from io_fixtures import FIXTURES

from distillguard.io import InputError, Quarantine, read_events
from distillguard.schema import EVENT_SCHEMA, MAX_TEXT_BYTES

BAD = FIXTURES / "bad.jsonl"


def consume(stream) -> pa.Table:
    return pa.Table.from_batches(list(stream), schema=EVENT_SCHEMA)


def test_each_kind_of_bad_record_is_quarantined(tmp_path):
    out = tmp_path / "rejected.jsonl"
    with Quarantine(out) as q:
        s = read_events(BAD, quarantine=q)
        t = consume(s)
    assert t.column("account_id").to_pylist() == ["ok-1", "ok-2"]
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    got = {d["line"]: (d["field"], d["kind"]) for d in lines}
    assert got == {
        2: ("<record>", "invalid_json"),
        3: ("messages", "wrong_type"),
        4: ("account_id", "missing_field"),
        5: ("timestamp", "missing_field"),
        6: ("<record>", "invalid_utf8"),
        8: ("<record>", "truncated_record"),
    }
    assert all(d["source"] == str(BAD) and d["reason"] for d in lines)
    # raw kept in full: text as text, non-UTF-8 bytes losslessly as base64
    raw_lines = BAD.read_bytes().split(b"\n")
    by_line = {d["line"]: d for d in lines}
    assert by_line[3]["raw"].encode() == raw_lines[2]
    assert by_line[6]["raw"] is None and base64.b64decode(by_line[6]["raw_b64"]) == raw_lines[5]
    assert by_line[8]["raw"].encode() == raw_lines[7]
    # the summary counts them
    assert s.summary.records == 8 and s.summary.ingested == 2 and s.summary.rejected == 6
    assert s.summary.by_reason == q.by_reason and q.count == 6
    assert s.summary.by_reason["missing_field"] == 2


def test_ten_megabyte_prompt_is_rejected_and_kept(tmp_path):
    p = tmp_path / "huge.jsonl"
    big = "x" * (10 * 1024 * 1024)
    with open(p, "wb") as fh:
        fh.write(orjson.dumps({"timestamp": 1, "account_id": "a", "prompt": "small"}) + b"\n")
        fh.write(orjson.dumps({"timestamp": 1, "account_id": "b", "prompt": big}) + b"\n")
        fh.write(orjson.dumps({"timestamp": 2, "account_id": "c", "messages": [{"role": "user", "content": big}]}) + b"\n")
    q = Quarantine()
    t = consume(read_events(p, quarantine=q))
    assert t.column("account_id").to_pylist() == ["a"]
    assert [(r.line, r.field, r.kind) for r in q.records] == [(2, "prompt", "too_large"), (3, "messages", "too_large")]
    assert str(MAX_TEXT_BYTES) in q.records[0].reason
    doc = q.records[0].to_json()
    assert len(orjson.loads(doc["raw"])["prompt"]) == len(big)  # kept in full


def test_truncated_gzip_keeps_what_was_readable(tmp_path):
    import gzip

    lines = b"".join(orjson.dumps({"timestamp": i, "account_id": "a", "prompt": f"q{i}"}) + b"\n"
                     for i in range(20000))
    packed = gzip.compress(lines)
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(packed[: len(packed) * 2 // 3])
    q = Quarantine()
    t = consume(read_events(p, quarantine=q))
    *partial, rej = q.records  # the cut-off last line (if the cut fell inside one), then the stream itself
    assert [r.kind for r in partial] in ([], ["truncated_record"])
    assert rej.field == "<file>" and "corrupt or truncated" in rej.reason
    assert 0 < t.num_rows < 20000 and rej.line > t.num_rows  # everything before the cut is kept, in order
    assert t.column("user_text").to_pylist() == [f"q{i}" for i in range(t.num_rows)]


def test_strict_raises_at_first_bad_record_naming_file_line_field():
    with pytest.raises(InputError) as e:
        consume(read_events(BAD, strict=True))
    err = e.value
    assert (err.path, err.line, err.field) == (str(BAD), 2, "<record>")
    assert f"{BAD}:2" in str(err) and "invalid JSON" in str(err)


def test_strict_csv_names_the_field():
    with pytest.raises(InputError) as e:
        consume(read_events(FIXTURES / "events.csv", mapping=FIXTURES / "events_mapping.yaml", strict=True))
    assert (e.value.line, e.value.field) == (4, "account_id")


def test_wrong_types_in_known_fields(tmp_path):
    p = tmp_path / "types.jsonl"
    recs = [
        {"timestamp": True, "account_id": "a", "prompt": "x"},
        {"timestamp": "yesterday", "account_id": "a", "prompt": "x"},
        {"timestamp": 1, "account_id": ["a"], "prompt": "x"},
        {"timestamp": 1, "account_id": "a", "messages": [{"role": "user", "content": 5}]},
        {"timestamp": 1, "account_id": "a", "messages": [{"content": "no role"}]},
        {"timestamp": 1, "account_id": "a", "prompt": "x", "tools": {"not": "a list"}},
        {"timestamp": 1, "account_id": "a", "prompt": "x", "status_code": 70000},
        {"timestamp": 1, "account_id": "a", "prompt": "x", "max_tokens": 1.5},
        {"timestamp": "0001-01-01T00:00:00+05:00", "account_id": "a", "prompt": "x"},
        [1, 2, 3],
    ]
    p.write_bytes(b"\n".join(orjson.dumps(r) for r in recs) + b"\n")
    q = Quarantine()
    assert consume(read_events(p, quarantine=q)).num_rows == 0
    fields = [r.field for r in q.records]
    assert fields == ["timestamp", "timestamp", "account_id", "messages[0].content", "messages[0].role", "tools",
                      "status_code", "max_tokens", "timestamp", "<record>"]


def test_csv_non_utf8_and_ragged_rows(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"timestamp,account_id,prompt\n1,a,fine\n2,b,caf\xe9\n3,c,too,many\n")
    q = Quarantine()
    t = consume(read_events(p, quarantine=q))
    assert t.column("account_id").to_pylist() == ["a"]
    assert [(r.line, r.kind) for r in q.records] == [(3, "invalid_utf8"), (4, "invalid_value")]
    assert base64.b64decode(q.records[0].to_json()["raw_b64"]).endswith(b"caf\xe9")


# ------------------------------------------------------------------------------------------- property


def _count_lines(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes_never_crash_and_every_line_is_accounted(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("fuzz") / "x.jsonl"
    p.write_bytes(data)
    s = read_events(p, fmt="jsonl")
    t = consume(s)
    if not data.startswith(b"\x1f\x8b"):  # gzip magic: read as a (corrupt) compressed stream instead
        assert s.summary.records == _count_lines(data)
    assert t.num_rows + s.summary.rejected + s.summary.skipped == s.summary.records
    assert s.quarantine.count == s.summary.rejected


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=12)
_keys = st.sampled_from(["timestamp", "account_id", "messages", "prompt", "tools", "request_id", "asn",
                         "status_code", "max_tokens", "account_created_at", "model", "request", "response",
                         "metadata", "resourceSpans", "role", "content", "x"])
_record = st.dictionaries(_keys, _json | st.sampled_from(
    ["2026-03-01T00:00:00Z", 1772323200, [{"role": "user", "content": "hi"}], "acct"]), max_size=7)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=st.lists(_record | _json, min_size=1, max_size=6))
def test_random_json_records_are_ingested_or_rejected(tmp_path_factory, recs):
    d = tmp_path_factory.mktemp("fuzzjson")
    p = d / "x.jsonl"
    # json, not orjson: integers beyond 64 bits must reach the reader (which rejects them)
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n", encoding="utf-8")
    s = read_events(p)
    t = consume(s)
    assert t.num_rows + s.summary.rejected + s.summary.skipped == s.summary.records >= len(recs) - sum(
        1 for r in recs if isinstance(r, dict) and "resourceSpans" in r)
    # the same records as CSV cells and as a Parquet-ish JSON document never crash either
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["timestamp", "account_id", "messages"])
    for r in recs:
        r = r if isinstance(r, dict) else {}
        w.writerow([json.dumps(r.get("timestamp")), str(r.get("account_id", "")), json.dumps(r.get("messages"))])
    c = d / "x.csv"
    c.write_text(buf.getvalue())
    sc = read_events(c)
    tc = consume(sc)
    assert tc.num_rows + sc.summary.rejected == sc.summary.records == len(recs)

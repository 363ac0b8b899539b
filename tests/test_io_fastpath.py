"""The DuckDB fast path for canonical JSONL gives exactly what the Python path gives: rows, values, event ids,
rejects (file, line, field, reason, raw) and summary counts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillguard.io import read_events
from io_fixtures import FIXTURES


def _read(path: Path, fast: bool, **kw):
    stream = read_events(path, fast=fast, workers=0, **kw)
    batches = list(stream)
    table = pa.Table.from_batches(batches) if batches else None
    rejects = [(r.source, r.line, r.field, r.reason, r.kind, r.raw) for r in stream.quarantine.records]
    return table, rejects, stream.summary.as_dict()


def assert_same(path: Path, **kw) -> pa.Table | None:
    slow = _read(path, False, **kw)
    fast = _read(path, True, **kw)
    assert fast[2] == slow[2], (fast[2], slow[2])
    assert fast[1] == slow[1]
    if slow[0] is None:
        assert fast[0] is None
        return None
    assert fast[0].schema == slow[0].schema
    for name in slow[0].column_names:
        a, b = slow[0].column(name).to_pylist(), fast[0].column(name).to_pylist()
        assert a == b, (name, next((x, y) for x, y in zip(a, b) if x != y))
    return fast[0]


def test_io_fixtures_identical():
    for name in ("canonical.jsonl", "bad.jsonl", "openai_logs.jsonl", "otel_traces.jsonl"):
        assert_same(FIXTURES / name)
    assert_same(FIXTURES / "canonical.jsonl", fmt="canonical")


def test_simulated_demo_identical(tmp_path):
    from distillguard.sim import simulate

    res = simulate(tmp_path / "sim", "demo", seed=1, scale=0.25)
    table = assert_same(res.events_path)
    assert table is not None and table.num_rows == res.n_events


EDGE_LINES = [
    b'{"timestamp": "2026-03-01T08:00:00Z", "account_id": "a", "prompt": "hi"}',
    b'{"timestamp": 1772323200.37, "account_id": "a", "messages": [{"role": "user", "content": "x"}]}',
    b'{"timestamp": 1772323200, "account_id": 17, "prompt": "p", "asn": 64500, "status_code": 200}',
    b'{"timestamp": 1772323200123, "account_id": "a", "prompt": "ms"}',
    b'{"timestamp": "2026-03-01T08:00:00.5+05:30", "account_id": "a", "prompt": "offset"}',
    b'{"timestamp": "2026-03-01t08:00:00Z", "account_id": "a", "prompt": "lower t"}',
    b'{"timestamp": "2026-02-30T08:00:00Z", "account_id": "a", "prompt": "bad day"}',
    b'{"timestamp": "2026-03-01T24:00:00Z", "account_id": "a", "prompt": "bad hour"}',
    b'{"timestamp": NaN, "account_id": "a", "prompt": "nan"}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "trailing comma",}',
    b'{"timestamp": 1772323200, "account_id": "a", "messages": [{"role": "user", "content": "x"},]}',
    b'{"timestamp": 1772323200, "account_id": "a", "account_id": "b", "prompt": "dup"}',
    b'{"timestamp": 1772323200, "account_id": "a", "messages": [{"role": "user", "role": "system", "content": "d"}]}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "nul \\u0000 and esc \\u001b"}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "lone \\ud800"}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "pair \\ud83d\\ude00 \\u00e9 \\/ \\" \\\\ \\t"}',
    b'{"timestamp": 1772323200, "account_id": "", "prompt": "empty account"}',
    b'{"timestamp": 1772323200, "account_id": "a"}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "x", "status_code": 1000}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "x", "max_tokens": 9223372036854775808}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "x", "max_tokens": -9223372036854775808}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "x", "max_tokens": 1.0, "model": 3}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "x", "custom": {"k": [1, 2]}}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "x", "tools": [{"type": "function"}]}',
    b'{"timestamp": 1772323200, "account_id": "a", "messages": [{"role": "user", "content": [{"type": "text", "text": "p"}]}]}',
    b'{"timestamp": 1772323200, "account_id": "a", "messages": [{"role": "system"}, {"role": "user", "content": null}], "prompt": "q"}',
    b'{"timestamp": 1772323200, "account_id": "a", "messages": []}',
    b'{"timestamp": 1772323200, "account_id": "a", "messages": "not a list"}',
    b'{"timestamp": 1772323200, "account_id": "a", "messages": [{"role": 5, "content": "x"}]}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "crlf"}\r',
    b"   ",
    b"",
    b"\x0b",
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "bad utf8 \xff"}',
    b"[1, 2]",
    b"not json",
    b'{"resourceSpans": []}',
    b'{"request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "account_id": "o", '
    b'"timestamp": 1772323200}',
    b'{"timestamp": "1772323200", "account_id": "a", "prompt": "numeric text"}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "' + "é€😀\u2028".encode() + b'"}',
    b'{"timestamp": 1772323200, "account_id": "a", "prompt": "unterminated last line"',
]


def test_edge_lines_identical(tmp_path):
    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\n".join(EDGE_LINES))
    table = assert_same(path)
    assert table is not None and table.num_rows >= 15
    gz = tmp_path / "edge.jsonl.gz"
    gz.write_bytes(gzip.compress(b"\n".join(EDGE_LINES[:-1]) + b"\n"))
    assert_same(gz)
    assert_same(path, fmt="canonical")


def test_corrupt_gzip_and_small_batches(tmp_path):
    body = b"".join(b'{"timestamp": %d, "account_id": "a%d", "prompt": "p%d"}\n' % (1772323200 + i, i % 7, i)
                    for i in range(3000))
    data = gzip.compress(body)
    bad = tmp_path / "cut.jsonl.gz"
    bad.write_bytes(data[: len(data) // 2])
    assert_same(bad)
    plain = tmp_path / "many.jsonl"
    plain.write_bytes(body)
    table = assert_same(plain, batch_rows=700)
    assert table.num_rows == 3000


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.floats(allow_nan=False), _text)
_ts = st.one_of(
    st.integers(-10, 10**13), st.floats(-1e3, 1e12, allow_nan=False),
    st.builds(lambda y, mo, d, h, mi, s, f, z: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{f}{z}",
              st.integers(1, 2300), st.integers(1, 13), st.integers(1, 31), st.integers(0, 24),
              st.integers(0, 59), st.integers(0, 60), st.sampled_from(["", ".5", ".123456", ".1234567"]),
              st.sampled_from(["", "Z", "z", "+05:30", "-08:00", "+24:00"])),
    _text,
)
_content = st.one_of(st.none(), _text, st.integers(), st.lists(
    st.one_of(_text, st.fixed_dictionaries({"type": st.just("text"), "text": _text})), max_size=2))
_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer", "assistant"]),
                           "content": _content}),
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system"])}),
    st.dictionaries(st.sampled_from(["role", "content", "name"]), _scalar, max_size=3),
)
_record = st.fixed_dictionaries(
    {"timestamp": _ts},
    optional={
        "account_id": st.one_of(_text, st.integers(0, 10**6), st.none()),
        "messages": st.one_of(st.lists(_message, max_size=4), _text),
        "prompt": st.one_of(_text, st.none(), st.integers()),
        "request_id": st.one_of(_text, st.none()),
        "model": _scalar, "response": _scalar, "ip": _scalar, "asn": _scalar,
        "account_created_at": _ts,
        "max_tokens": _scalar, "status_code": st.one_of(st.integers(-5, 1200), _scalar),
        "input_tokens": st.integers(-2**63, 2**63 - 1),
        "tools": st.one_of(st.none(), st.lists(st.dictionaries(_text, _scalar, max_size=2), max_size=2)),
        "zz_unknown": _scalar,
    },
)


# records the SQL can decide (so the fast rows themselves are compared, not only the fallback)
_iso = st.builds(lambda y, mo, d, h, mi, s, f, z: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{f}{z}",
                 st.integers(1970, 2150), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23),
                 st.integers(0, 59), st.integers(0, 59), st.sampled_from(["", ".5", ".000001", ".123456"]),
                 st.sampled_from(["Z", "z", "+05:30", "-08:00", "+00:00"]))
_good_ts = st.one_of(_iso, st.integers(1, 10**11 - 1), st.floats(1e-3, 1e11 - 1),
                     st.integers(10**11 + 1, 4 * 10**12))
_good_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer", "assistant", "x"]),
                                       "content": st.one_of(st.none(), _text)})
_good_record = st.fixed_dictionaries(
    {"timestamp": _good_ts, "account_id": st.one_of(_text.filter(bool), st.integers(0, 10**12))},
    optional={
        "messages": st.lists(_good_message, max_size=4), "prompt": _text,
        "request_id": st.one_of(_text, st.none()), "model": st.one_of(_text, st.none()),
        "response": _text, "org_id": _text, "asn": st.one_of(_text, st.integers(-10, 2**64 - 1)),
        "account_created_at": _good_ts, "max_tokens": st.integers(-2**63 + 1, 2**63 - 1),
        "status_code": st.integers(0, 999), "reasoning_tokens": st.none(),
    },
).filter(lambda r: "messages" in r or "prompt" in r)


_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _compare_records(tmp_path_factory, records) -> None:
    path = tmp_path_factory.mktemp("hyp") / "h.jsonl"
    path.write_bytes(b"\n".join(json.dumps(r, ensure_ascii=False).encode() for r in records) + b"\n")
    assert_same(path)


@_SETTINGS
@given(st.lists(_good_record, min_size=1, max_size=30))
def test_hypothesis_decidable_records_identical(tmp_path_factory, records):
    _compare_records(tmp_path_factory, records)


@_SETTINGS
@given(st.lists(_record, min_size=1, max_size=30))
def test_hypothesis_records_identical(tmp_path_factory, records):
    _compare_records(tmp_path_factory, records)


def test_sql_failure_falls_back_to_python(tmp_path, monkeypatch):
    from distillguard.io import fastpath

    monkeypatch.setattr(fastpath, "_SQL", "SELECT error('boom') FROM blk")
    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\n".join(EDGE_LINES))
    table = assert_same(path)
    assert table is not None and table.num_rows >= 15


def test_ingest_command_fast_flag_stores_the_same(tmp_path):
    from typer.testing import CliRunner

    from distillguard.cli import app
    from distillguard.store import Store

    files = [str(FIXTURES / "canonical.jsonl"), str(FIXTURES / "bad.jsonl")]
    stored = {}
    for flag in ("--fast", "--no-fast"):
        db = tmp_path / flag.strip("-") / "t.duckdb"
        db.parent.mkdir()
        r = CliRunner().invoke(app, ["ingest", *files, "--db", str(db), "--no-signals", flag])
        assert r.exit_code == 0, r.output
        with Store(db) as st:
            stored[flag] = st.events_table().sort_by("event_id").to_pylist()
        stored[flag + "rej"] = [json.loads(x) for x in (db.parent / "t.rejected.jsonl").read_bytes().splitlines()]
    assert stored["--fast"] == stored["--no-fast"] and len(stored["--fast"]) == 7
    assert stored["--fastrej"] == stored["--no-fastrej"] and len(stored["--fastrej"]) == 6

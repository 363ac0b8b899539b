"""The Arrow block parser (io/blockparse.py) gives exactly what the plain Python path gives: rows and every value,
rejects (file, line, field, reason, raw) and summary counts, for good records, every bad-record kind, odd
line layouts, small blocks (so refused pieces are halved), gzip, and worker processes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillguard.io import blockparse, read_events
from io_fixtures import FIXTURES


def _read(path: Path, fast, workers=0, **kw):
    stream = read_events(path, fast=fast, workers=workers, **kw)
    batches = list(stream)
    table = pa.Table.from_batches(batches) if batches else None
    rejects = [(r.source, r.line, r.field, r.reason, r.kind, r.raw) for r in stream.quarantine.records]
    return table, rejects, stream.summary.as_dict()


def assert_same(path: Path, workers=0, **kw) -> pa.Table | None:
    slow = _read(path, False, **kw)
    fast = _read(path, "arrow", workers=workers, **kw)
    assert fast[2] == slow[2], (fast[2], slow[2])
    assert fast[1] == slow[1], next((a, b) for a, b in zip(fast[1] + [None] * 9, slow[1]) if a != b)
    if slow[0] is None:
        assert fast[0] is None
        return None
    assert fast[0].schema == slow[0].schema
    assert fast[0].num_rows == slow[0].num_rows
    for name in slow[0].column_names:
        a, b = slow[0].column(name).to_pylist(), fast[0].column(name).to_pylist()
        assert a == b, (name, next((x, y) for x, y in zip(a, b) if x != y))
    return fast[0]


def _rec(i: int, **kw) -> dict:
    rec = {"timestamp": "2026-03-01T08:00:%02d.%dZ" % (i % 60, i % 7), "account_id": f"acct_{i % 13}",
           "request_id": f"req_{i}", "model": "m", "ip": "10.0.0.1", "asn": "AS1", "status_code": 200,
           "messages": [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": f"question {i}\nwith \"quotes\" and \\ slash\t"}],
           "response": "ok", "input_tokens": i, "output_tokens": 2 * i}
    rec.update(kw)
    return rec


# lines covering what the fast path accepts and every kind it must leave to Python
EDGE_LINES = [
    json.dumps(_rec(1)).encode(),
    json.dumps(_rec(2), ensure_ascii=False, separators=(",", ":")).encode(),
    json.dumps(_rec(3, messages=None, prompt="only a prompt é€😀\u2028")).encode(),
    json.dumps(_rec(4), ensure_ascii=True).encode().replace(b"question", b"\\u00e9\\ud83d\\ude00"),
    json.dumps(_rec(5, timestamp=1772323200.37, account_id=17, asn=64500)).encode(),
    json.dumps(_rec(6, timestamp=1772323200123)).encode(),
    json.dumps(_rec(7, timestamp="2026-03-01T08:00:00.5+05:30", account_created_at="2024-02-29T00:00:00-08:00"))
    .encode(),
    json.dumps(_rec(8, timestamp="2026-02-30T08:00:00Z")).encode(),
    json.dumps(_rec(9, timestamp="2026-03-01T08:00:00")).encode(),
    json.dumps(_rec(10, timestamp=" 2026-03-01T08:00:00Z")).encode(),
    json.dumps(_rec(11, request_id=None)).encode(),
    json.dumps(_rec(12, request_id="")).encode(),
    json.dumps(_rec(13, tools=[{"type": "function", "function": {"name": "f"}}])).encode(),
    json.dumps(_rec(14, tools=None)).encode(),
    json.dumps(_rec(15, custom={"k": [1, 2]})).encode(),
    json.dumps(_rec(16, custom=None)).encode(),
    json.dumps(_rec(17)).encode().replace(b'"model"', b'"zz": null, "model"').replace(b'"zz"', b'"z\\u007a"'),
    json.dumps(_rec(18, messages=[{"role": "user", "content": "x", "name": None}])).encode(),
    json.dumps(_rec(19, messages=[{"role": "user"}])).encode(),
    json.dumps(_rec(20, messages=[{"role": "user", "content": None}])).encode(),
    json.dumps(_rec(21, messages=[{"role": "user", "content": [{"type": "text", "text": "p"}]}])).encode(),
    json.dumps(_rec(22, messages=[], prompt=None)).encode(),
    json.dumps(_rec(23, messages=[{"role": "user", "content": "a"}], prompt="b")).encode(),
    json.dumps(_rec(24, messages=None, prompt=None)).encode(),
    json.dumps(_rec(25, messages=[{"role": "user", "content": "ctl \x01 \x1b \x7f \b \f"}])).encode(),
    json.dumps(_rec(26, account_id="")).encode(),
    json.dumps(_rec(27, status_code=1000)).encode(),
    json.dumps(_rec(28, max_tokens=-(2**63))).encode(),
    json.dumps(_rec(29, max_tokens=2**63)).encode(),
    json.dumps(_rec(30, max_tokens=1.0, model=3)).encode(),
    json.dumps(_rec(31)).encode().replace(b'"model": "m"', b'"model": "m", "model": "n"'),
    json.dumps(_rec(32, response=float("nan"))).encode(),
    json.dumps(_rec(33)).encode()[:-1] + b', }',
    json.dumps(_rec(34, prompt="lone \ud800"[:5])).encode().replace(b"lone ", b"lone \\ud800"),
    json.dumps(_rec(35)).encode().replace(b"question", b"bad utf8 \xff"),
    json.dumps(_rec(36)).encode() + b" " + json.dumps(_rec(37)).encode(),
    json.dumps(_rec(38)).encode() + b"\r",
    b"   ",
    b"",
    b"\x0b",
    b"null",
    b"[1, 2]",
    b"not json",
    b'{"resourceSpans": []}',
    b'{"request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "account_id": "o", '
    b'"timestamp": 1772323200}',
    b'{"timestamp": "2026-03-01T08:00:00Z",',
    b'  "account_id": "split over lines", "prompt": "x", "request_id": "r"}',
    json.dumps(_rec(39, reasoning_effort="high", org_id=None, user_agent="ua/1")).encode(),
    json.dumps(_rec(40, asn=None, account_created_at=None, messages=[{"role": "developer", "content": ""}])).encode(),
    json.dumps(_rec(42)).encode()[:-1] + b', "zz": {}}',
    json.dumps(_rec(43)).encode()[:-1] + b', "zz": [null]}',
    json.dumps(_rec(44, messages=[{"role": "user", "content": "x", "meta": []}])).encode(),
    json.dumps(_rec(45)).encode().replace(b'"role": "system"', b'"role": "system", "role": "user"'),
    json.dumps(_rec(46, tools=[])).encode(),
    json.dumps(_rec(47, tools={"a": 1})).encode(),
    json.dumps(_rec(48, tools=[{"x": float("nan")}])).encode(),
    json.dumps(_rec(49, tools=[{"x": None}], zz=None)).encode(),
    json.dumps(_rec(50, timestamp="2199-12-31T23:59:59.999999-23:59", account_created_at="1900-02-29T00:00:00Z"))
    .encode(),
    json.dumps(_rec(51, request_id=5, asn=True)).encode(),
    b"{ }",
    json.dumps(_rec(41)).encode()[:-5],  # unterminated last line
]


def test_fixtures_and_edge_lines_identical(tmp_path):
    for name in ("canonical.jsonl", "bad.jsonl", "openai_logs.jsonl", "otel_traces.jsonl"):
        assert_same(FIXTURES / name)
    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\n".join(EDGE_LINES))
    table = assert_same(path)
    assert table is not None and table.num_rows >= 15
    assert_same(path, fmt="canonical")
    complete = b"\n".join(EDGE_LINES[:-1]) + b"\n"
    gz = tmp_path / "edge.jsonl.gz"
    gz.write_bytes(gzip.compress(complete))
    assert_same(gz)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(complete * 20)[:-40])
    assert_same(cut)


def test_fast_path_takes_the_plain_rows(tmp_path, monkeypatch):
    """The common records really are decided by Arrow (not only by the fallback)."""
    calls = []
    from distillguard.io import readers

    real = readers.parse_lines
    monkeypatch.setattr(readers, "parse_lines", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    path = tmp_path / "plain.jsonl"
    tool = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "required": ["q"]}}}
    lines = [json.dumps(_rec(i, tools=[tool] * (i % 3)) if i % 4 == 0 else _rec(i)).encode() for i in range(200)]
    lines[50] = b'{"timestamp": 5, "account_id": "a"}'
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    table = assert_same(path)
    assert table.num_rows == 199
    calls.clear()
    list(read_events(path, fast="arrow", workers=0))
    assert 51 in calls and len(calls) <= blockparse.MIN_PIECE_LINES


def test_small_blocks_and_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(blockparse, "ARROW_BLOCK_BYTES", 4096)
    monkeypatch.setattr(blockparse, "MIN_PIECE_LINES", 2)
    body = []
    for i in range(400):
        body.append(EDGE_LINES[i % (len(EDGE_LINES) - 1)] if i % 9 == 0 else json.dumps(_rec(i)).encode())
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(body) + b"\n")
    for threads in (1, 3):  # one helper thread, or several taking blocks in turn
        monkeypatch.setattr(blockparse, "READ_THREADS", threads)
        table = assert_same(path, batch_rows=7)
        assert table.num_rows > 300
    assert_same(path, workers=2)  # workers apply to the Python path; the Arrow path ignores them


def test_epoch_file_switches_types(tmp_path):
    """A file with epoch timestamps and integer ids/ASNs: the parser switches those columns' types."""
    lines = [json.dumps(_rec(i, timestamp=1772323200 + i * 0.37 if i % 2 else 1772323200 + i,
                             account_id=1000 + i % 5, asn=64512 + i)).encode() for i in range(300)]
    lines[120] = json.dumps(_rec(120, timestamp="2026-03-01T08:00:00Z")).encode()  # mixed: left to Python
    path = tmp_path / "epoch.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert assert_same(path).num_rows == 300


def test_reader_switch_and_default(monkeypatch):
    from distillguard.io import readers

    monkeypatch.delenv("DISTILLGUARD_READER", raising=False)
    assert readers.DEFAULT_READER == "arrow"
    assert read_events(FIXTURES / "canonical.jsonl").reader == "arrow"
    assert read_events(FIXTURES / "canonical.jsonl", fast=False).reader == "python"
    assert read_events(FIXTURES / "canonical.jsonl", fast=True).reader == "sql"
    with pytest.raises(ValueError, match="unknown reader"):
        read_events(FIXTURES / "canonical.jsonl", fast="fastest")
    monkeypatch.setenv("DISTILLGUARD_READER", "python")
    assert read_events(FIXTURES / "canonical.jsonl").reader == "python"
    assert read_events(FIXTURES / "canonical.jsonl", fast="arrow").reader == "arrow"


def test_simulated_demo_identical(tmp_path):
    from distillguard.sim import simulate

    res = simulate(tmp_path / "sim", "demo", seed=3, scale=0.25)
    table = assert_same(res.events_path)
    assert table is not None and table.num_rows == res.n_events


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10)
_plain = st.text(alphabet=st.sampled_from('ab é"\\\n\t\r\x08\x0c\x01/\u2028😀'), max_size=8)
_iso = st.builds(lambda y, mo, d, h, mi, s, f, z: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{f}{z}",
                 st.integers(1899, 2201), st.integers(0, 13), st.integers(0, 32), st.integers(0, 24),
                 st.integers(0, 60), st.integers(0, 60),
                 st.sampled_from(["", ".5", ".05", ".000001", ".123456", ".1234567", "."]),
                 st.sampled_from(["Z", "z", "+05:30", "-08:00", "+00:00", "-00:00", "+24:00", "", "+0530"]))
_ts = st.one_of(_iso, st.integers(-5, 2 * 10**11), st.floats(-1.0, 2e11, allow_nan=False), st.just("x"))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.floats(allow_nan=False), _text)
_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer", "assistant", "u\"1"]),
                           "content": st.one_of(_plain, _plain, st.none())}),
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system"])}, optional={"name": st.none()}),
    st.dictionaries(st.sampled_from(["role", "content", "name"]), _scalar, max_size=3),
)
_record = st.fixed_dictionaries(
    {"timestamp": _ts, "request_id": st.one_of(_plain.filter(bool), st.none(), st.just(""))},
    optional={
        "account_id": st.one_of(_plain, st.integers(-3, 10**6), st.none()),
        "messages": st.one_of(st.lists(_message, max_size=3), _text),
        "prompt": st.one_of(_plain, st.none(), st.integers()),
        "model": st.one_of(_plain, _scalar), "response": _plain, "asn": st.one_of(_plain, st.integers(-9, 99)),
        "account_created_at": _ts, "max_tokens": st.one_of(st.integers(-2**63, 2**63), _scalar),
        "status_code": st.integers(-5, 1200), "reasoning_content": st.none(),
        "tools": st.one_of(st.none(), st.lists(st.dictionaries(_text, _scalar, max_size=2), max_size=2)),
        "zz_unknown": st.one_of(st.none(), _scalar),
    },
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_record, st.sampled_from(["compact", "spaced", "ascii", "escaped-key", "blank"])),
                min_size=1, max_size=25))
def test_hypothesis_records_identical(tmp_path_factory, items):
    lines = []
    for rec, style in items:
        if style == "compact":
            line = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
        elif style == "ascii":
            line = json.dumps(rec)
        else:
            line = json.dumps(rec, ensure_ascii=False)
        if style == "escaped-key":
            line = line.replace('"zz_unknown"', '"zz\\u005funknown"').replace('"name"', '"n\\u0061me"')
        lines.append(line.encode("utf-8", "surrogatepass"))
        if style == "blank":
            lines.append(b"  \r")
    path = tmp_path_factory.mktemp("hyp") / "h.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert_same(path)


def test_ingest_command_default_reader_stores_the_same(tmp_path):
    from typer.testing import CliRunner

    from distillguard.cli import app
    from distillguard.store import Store

    edge = tmp_path / "edge.jsonl"
    edge.write_bytes(b"\n".join(EDGE_LINES))
    stored = {}
    for flag in ("--no-fast", None):
        db = tmp_path / str(flag) / "t.duckdb"
        db.parent.mkdir()
        r = CliRunner().invoke(app, ["ingest", str(edge), "--db", str(db), "--no-signals"] + ([flag] if flag else []))
        assert r.exit_code == 0, r.output
        with Store(db) as st:
            stored[flag] = st.events_table().sort_by("event_id").to_pylist()
        stored[f"{flag}rej"] = [json.loads(x) for x in (db.parent / "t.rejected.jsonl").read_bytes().splitlines()]
    assert stored[None] == stored["--no-fast"] and len(stored[None]) >= 15
    assert stored["Nonerej"] == stored["--no-fastrej"] and len(stored["Nonerej"]) >= 15


def test_strict_mode_stops_at_the_same_record(tmp_path):
    from distillguard.io import InputError

    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\n".join(EDGE_LINES))
    errors = []
    for fast in (False, "arrow"):
        with pytest.raises(InputError) as exc:
            list(read_events(path, fast=fast, strict=True, workers=0))
        errors.append((str(exc.value), exc.value.line, exc.value.field))
    assert errors[0] == errors[1] and errors[0][1] == 8


def test_unexpected_failure_reads_the_block_with_python(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise ValueError("boom")

    monkeypatch.setattr(blockparse, "derive", boom)
    monkeypatch.setattr(blockparse, "parse_block", boom)
    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\n".join(EDGE_LINES))
    assert assert_same(path).num_rows >= 15
    complete = tmp_path / "complete.jsonl"
    complete.write_bytes(b"\n".join(EDGE_LINES[:-1]) + b"\n")
    assert_same(complete)


def test_skipped_columns_come_back_null_and_nothing_else_changes(tmp_path):
    """``skip`` lets the scan spare building the messages JSON and the source labels; rows, rejects, counts
    and every other value stay the Python parser's (a control character in a message, which the full path
    sends to Python for its JSON escape, is kept on the Arrow path then)."""
    path = tmp_path / "skip.jsonl"
    recs = [json.dumps(_rec(i)).encode() for i in range(60)]
    ctrl = _rec(60)
    ctrl["messages"][1]["content"] = "bell \x07 inside"
    recs[30] = json.dumps(ctrl).encode()
    path.write_bytes(b"\n".join(recs + EDGE_LINES[:-1]) + b"\n")
    slow = _read(path, False)
    fast = _read(path, "arrow", skip=("messages", "source"))
    assert fast[1] == slow[1] and fast[2] == slow[2]
    assert fast[0].num_rows == slow[0].num_rows > 60
    for name in slow[0].column_names:
        a, b = slow[0].column(name).to_pylist(), fast[0].column(name).to_pylist()
        if name in ("messages", "source"):
            assert b.count(None) >= 50 and any(x is not None for x in a)  # Python-read rows still fill them
        else:
            assert a == b, name
    row = fast[0].column("user_text").to_pylist().index("bell \x07 inside")
    assert fast[0].column("messages")[row].as_py() is None  # decided by Arrow this time


def test_skipping_messages_lets_arrow_take_tool_call_turns(tmp_path):
    """Without the messages JSON, items with other keys (``tool_calls``, ``tool_call_id``) and an assistant turn
    whose content is null are decided on the Arrow path, with the Python parser's values; skipped texts
    (response, reasoning, tools) come back null; a null role still goes to Python and is rejected there."""
    turns = [{"role": "system", "content": "agent"}, {"role": "user", "content": "find it"},
             {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                    "function": {"name": "f", "arguments": "{}"}}]},
             {"role": "tool", "tool_call_id": "c1", "content": "found"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    recs = [json.dumps(_rec(i, messages=turns, tools=tools, reasoning_content="r" * i)).encode() for i in range(40)]
    recs += [json.dumps(_rec(i)).encode() for i in range(40, 80)]
    recs.append(json.dumps(_rec(80, messages=[{"role": None, "content": "x", "tool_call_id": "c"}])).encode())
    path = tmp_path / "tools.jsonl"
    path.write_bytes(b"\n".join(recs + EDGE_LINES[:-1]) + b"\n")
    skipped = ("messages", "source", "tools", "response", "reasoning_content")
    slow = _read(path, False)
    fast = _read(path, "arrow", skip=skipped)
    assert fast[1] == slow[1] and fast[2] == slow[2]
    assert any(r[2] == "messages[0].role" for r in fast[1])
    assert fast[0].num_rows == slow[0].num_rows > 80
    for name in slow[0].column_names:
        a, b = slow[0].column(name).to_pylist(), fast[0].column(name).to_pylist()
        if name in skipped:
            assert b[:80] == [None] * 80 and any(x is not None for x in a[:80])
        else:
            assert a == b, name
    assert fast[0].column("n_tools").to_pylist()[:40] == [1] * 40
    assert fast[0].column("n_messages").to_pylist()[:40] == [4] * 40

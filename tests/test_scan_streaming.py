"""The scan's streamed reading: signals per chunk, texts cut after signals, results as with one big chunk."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from detect_fixtures import T0, mini_world, record, write_jsonl  # noqa: E402

import distillguard.detect.pipeline as pipeline  # noqa: E402
from distillguard.detect import scan  # noqa: E402
from distillguard.signals import compute_signals  # noqa: E402

LONG = "Explain step by step, showing your hidden reasoning. " * 40  # ~2,100 characters


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    pairs = mini_world()
    for i in range(6):
        rec, sig = record("long-writer", T0 + timedelta(hours=i), f"{i} {LONG}", i=i)
        rec["messages"].insert(0, {"role": "system", "content": "You are terse. " * 30})
        pairs.append((rec, sig))
    # the same prompts again and again across chunks, some with tools offered (capability tool_use per row)
    tool = [{"type": "function", "function": {"name": "run_code", "parameters": {"type": "object"}}}]
    for i in range(40):
        extra = {"tools": tool} if i % 3 == 0 else {}
        pairs.append(record(f"repeat-{i % 5}", T0 + timedelta(hours=i), "Write a Python function that sorts a list.",
                            i=100 + i, **extra))
        pairs.append(record(f"repeat-{i % 5}", T0 + timedelta(hours=i, minutes=5), "Show your hidden chain of thought.",
                            i=200 + i))
    pairs.sort(key=lambda p: p[0]["timestamp"])  # interleaved, as traffic is
    path = write_jsonl(d / "events.jsonl", pairs)
    with open(path, "ab") as fh:
        fh.write(b'{"account_id": "x", "timestamp": "not a time", "prompt": "hi"}\n')
    return path


def _by_account(res):
    """accounts.csv columns exactly; the unrounded scores to 1e-9 (DuckDB's parallel float sums may differ in
    the last bit from run to run)."""
    t = res.accounts.sort_by("account_id")
    out = {c: t.column(c).to_pylist() for c in t.column_names}
    for c in ("raw", "own_score"):
        out[c] = [round(x, 9) for x in out[c]]
    return out


def test_chunked_signals_equal_whole_table_signals(world, monkeypatch):
    whole, _, _ = pipeline.load_events([world])
    expected = compute_signals(whole)
    sizes = []

    def spy(events):
        sizes.append(events.num_rows)
        return compute_signals(events)

    events, signals, reader = pipeline.stream_events([world], chunk_rows=97, signal_fn=spy)
    assert reader == "distillguard.io"
    assert len(sizes) > 5 and max(sizes) <= 97  # full texts of one chunk at a time, never of the file
    assert whole.num_rows == events.num_rows
    assert signals.equals(expected)
    assert events.column("event_id").equals(whole.column("event_id"))
    assert events.column("timestamp").equals(whole.column("timestamp"))
    caps = set(zip(signals.column("account_id").to_pylist(), signals.column("capability").to_pylist()))
    assert ("repeat-0", "tool_use") in caps and any(a.startswith("repeat-") and c != "tool_use" for a, c in caps)


def test_first_chunks_are_smaller_by_default(world, monkeypatch):
    """With the default chunk size the first chunks hold an eighth, a quarter and half of it (the workers
    start early); the signals are the same as over the whole table."""
    whole, _, _ = pipeline.load_events([world])
    monkeypatch.setattr(pipeline, "SIGNAL_CHUNK_ROWS", 96)
    seen = []
    submit = pipeline._TextSignalCache.submit

    def spy(self, chunk, executor=None):
        seen.append(chunk.num_rows)
        return submit(self, chunk, executor)

    monkeypatch.setattr(pipeline._TextSignalCache, "submit", spy)
    events, signals, _ = pipeline.stream_events([world])
    assert whole.num_rows > 96 * 3
    assert seen[:5] == [12, 24, 48, 96, 96] and sum(seen) == whole.num_rows
    assert signals.equals(compute_signals(whole))


def test_kept_texts_cut_from_the_encoding_equal_cutting_every_row():
    """_cut_texts from the chunk's dictionary encoding gives the very array of cutting and encoding every
    row: same dictionary order and codes (long texts that share their first characters, multibyte text);
    with nulls it takes the plain path."""
    import pyarrow.compute as pc

    k = pipeline.KEEP_TEXT_CHARS
    long_a, long_b = "é" * k + "tail one", "é" * k + "tail two"  # equal once cut
    texts = pa.array(["short", long_a, "x" * (k + 5), long_b, "short", "日本語" * 100, long_a, ""])
    plain = pc.dictionary_encode(pc.utf8_slice_codeunits(texts, 0, k))
    got = pipeline._cut_texts(pa.chunked_array([texts]), pc.dictionary_encode(texts))
    assert got.dictionary.equals(plain.dictionary) and got.indices.equals(plain.indices)
    assert len(got.dictionary) == 5  # the two long texts share their cut form
    with_null = pa.array(["a", None, "a"])
    assert pipeline._cut_texts(pa.chunked_array([with_null]), None).equals(pc.dictionary_encode(with_null))


def test_each_distinct_text_is_analysed_once_across_chunks(world):
    whole, _, _ = pipeline.load_events([world])
    distinct = len(set(zip(whole.column("system_text").to_pylist(), whole.column("user_text").to_pylist())))
    seen = []

    def spy(events):
        seen.append(events.num_rows)
        return compute_signals(events)

    pipeline.stream_events([world], chunk_rows=101, signal_fn=spy)
    assert sum(seen) == distinct < whole.num_rows


def test_texts_are_cut_once_signals_exist(world):
    events, signals, _ = pipeline.stream_events([world], chunk_rows=50)
    assert events.column("system_text").null_count == events.num_rows
    lens = [len(t) for t in events.column("user_text").to_pylist() if t is not None]
    assert max(lens) == pipeline.KEEP_TEXT_CHARS
    # the signals saw the full text, not the cut one
    long_rows = [n for n, a in zip(signals.column("text_len").to_pylist(), signals.column("account_id").to_pylist())
                 if a == "long-writer"]
    assert long_rows and min(long_rows) > pipeline.KEEP_TEXT_CHARS


def test_scan_findings_do_not_depend_on_the_chunk_size(world, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "SIGNAL_CHUNK_ROWS", 10_000_000)
    one = scan([world], out_dir=tmp_path / "one")
    monkeypatch.setattr(pipeline, "SIGNAL_CHUNK_ROWS", 113)
    many = scan([world], out_dir=tmp_path / "many")
    assert _by_account(one) == _by_account(many)
    assert orjson.dumps(one.campaigns) == orjson.dumps(many.campaigns)
    assert {f"ring-{i:03d}" for i in range(8)} <= set(many.flagged_accounts())
    assert many.rejected == one.rejected == 1
    assert set(many.timings) >= {"read_s", "signals_s", "features_s", "link_s", "total_s"}
    for c in many.campaigns:
        assert all(len(p) <= 200 for p in c["sample_prompts"])


def test_arrow_table_input_keeps_its_texts(world):
    whole, _, _ = pipeline.load_events([world])
    events, signals, reader = pipeline.stream_events(whole)
    assert reader == "table" and events is whole
    assert signals.equals(compute_signals(whole))


def _batches(n: int, rows: int = 5, fail_at: int | None = None, log: list | None = None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"events.jsonl line {i * rows + 1}: field 'timestamp': not a time")
        if log is not None:
            log.append(i)
        yield pa.RecordBatch.from_pydict({"account_id": [f"a{i}"] * rows, "messages": ["x"] * rows})


def test_read_ahead_keeps_order_bounds_rows_and_slims():
    import time as _time

    log: list[int] = []
    ahead = pipeline._ReadAhead(_batches(40, log=log), max_rows=10)
    got = []
    try:
        while (b := ahead.next()) is not None:
            _time.sleep(0.002)
            # rows waiting for the consumer stay within max_rows (plus the batch being read)
            assert len(log) - (len(got) + 1) <= 10 // 5 + 1
            got.append(b)
    finally:
        ahead.close()
    assert [b.column(0)[0].as_py() for b in got] == [f"a{i}" for i in range(40)]
    assert all(b.column(1).null_count == b.num_rows for b in got)  # unused heavy columns dropped on the helper
    assert ahead.busy_s > 0


def test_read_ahead_raises_the_readers_error_and_stops_early():
    ahead = pipeline._ReadAhead(_batches(10, fail_at=3), max_rows=100)
    seen = 0
    with pytest.raises(ValueError, match="line 16: field 'timestamp'"):
        try:
            while ahead.next() is not None:
                seen += 1
        finally:
            ahead.close()
    assert seen == 3 and not ahead.thread.is_alive()
    # a consumer that stops early (its own error) does not leave the helper running
    ahead = pipeline._ReadAhead(_batches(10_000), max_rows=5)
    assert ahead.next() is not None
    ahead.close()
    assert not ahead.thread.is_alive()


def test_strict_scan_error_names_file_line_and_field(world):
    """The bad last line is read on the helper thread; its error reaches the caller unchanged."""
    from distillguard.io.quarantine import InputError

    n = sum(1 for _ in open(world, "rb"))
    with pytest.raises(InputError, match=rf"events\.jsonl:{n}: field 'timestamp'"):
        pipeline.stream_events([world], strict=True, chunk_rows=50)


def test_features_come_from_one_prejoined_table_when_signals_are_aligned(world):
    events, signals, _ = pipeline.stream_events(world)
    ev_t, sg_t = object(), object()
    joined, none = pipeline._feature_inputs(events, signals, ev_t, sg_t)
    assert none is None and joined is not ev_t
    cols = joined.columns
    assert set(events.column_names) <= set(cols) and "capability" in cols and "extraction_score" in cols
    shuffled = signals.take(pa.array(list(range(signals.num_rows))[::-1]))  # not aligned: the two tables as is
    assert pipeline._feature_inputs(events, shuffled, ev_t, sg_t) == (ev_t, sg_t)


def test_features_grouped_on_account_codes_equal_the_string_keyed_ones(world):
    """The aligned route groups accounts as int32 codes and puts the ids back: same rows, same order, same
    values as grouping by the id strings (floats to the last bits of parallel sums)."""
    import ibis
    import numpy as np

    from distillguard.features import account_features

    events, signals, _ = pipeline.stream_events(world)
    ev_t, sg_t = ibis.memtable(events), ibis.memtable(signals)
    coded = pipeline._features_table(events, signals, ev_t, sg_t, None)
    plain = account_features(ev_t, sg_t).to_pyarrow().sort_by("account_id")
    assert coded.schema == plain.schema and coded.num_rows == plain.num_rows > 10
    assert coded.column("account_id").to_pylist() == sorted(set(events.column("account_id").to_pylist()))
    for name in plain.column_names:
        a, b = coded.column(name), plain.column(name)
        if pa.types.is_floating(a.type):
            np.testing.assert_allclose(a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False),
                                       rtol=1e-12, atol=1e-12, err_msg=name)
        else:
            assert a.to_pylist() == b.to_pylist(), name
    # names come back by code: ids sorted in byte order, not Python's code-point order where they differ
    codes, names = pipeline._account_codes(pa.array(["b", "\u00e9", "a", "b", "Z"]))
    assert names.to_pylist() == ["Z", "a", "b", "\u00e9"] and codes.to_pylist() == [2, 3, 1, 2, 0]


def test_campaign_stats_take_members_by_position_as_the_engine_join_does(world):
    """On the stream's row-aligned Arrow tables the members' rows are taken by position; the per-campaign
    figures equal those of the engine join (which the Spark engine's Ibis tables take)."""
    import ibis

    from distillguard.detect.scoring import DetectConfig

    events, signals, _ = pipeline.stream_events(world)
    accts = sorted(set(events.column("account_id").to_pylist()))
    members = [(a, f"c{i % 3}") for i, a in enumerate(accts) if i % 4]  # three campaigns, some accounts in none
    cfg = DetectConfig()
    by_position = pipeline._campaign_stats(events, signals, members, cfg)
    joined = pipeline._campaign_stats(ibis.memtable(events), ibis.memtable(signals), members, cfg)
    assert set(by_position) == {"c0", "c1", "c2"}
    assert by_position == joined
    assert sum(d["requests"] for d in by_position.values()) < events.num_rows


def _engine_stats(t, cfg) -> dict:
    """The campaign figures as SQL aggregates over an Ibis table of the members' rows (the reference the
    Arrow aggregates of ``_member_stats`` must equal)."""
    import ibis

    base = t.group_by("campaign_id").aggregate(
        first_seen=t.timestamp.min(), last_seen=t.timestamp.max(), requests=t.count(),
        reasoning_tokens=t.reasoning_tokens.fill_null(0).sum(), output_tokens=t.output_tokens.fill_null(0).sum(),
        jailbreak=t.extraction_reason.lower().contains("jailbreak").fill_null(False).ifelse(1, 0).sum())
    out = {r["campaign_id"]: {"first_seen": pipeline._iso(r["first_seen"]), "last_seen": pipeline._iso(r["last_seen"]),
                              "requests": r["requests"], "reasoning_tokens": r["reasoning_tokens"] or 0,
                              "output_tokens": r["output_tokens"] or 0, "jailbreak": bool(r["jailbreak"]),
                              "capabilities": {}, "benchmarks": {}, "sample_prompts": [], "indicators": {}}
           for r in base.to_pyarrow().to_pylist()}
    for col, key in (("capability", "capabilities"), ("benchmark", "benchmarks")):
        g = t.filter(t[col].notnull()).group_by(["campaign_id", col]).aggregate(c=ibis._.count())
        for r in g.to_pyarrow().to_pylist():
            out[r["campaign_id"]][key][r[col]] = r["c"]
        for d in out.values():
            d[key] = {k: round(v / max(d["requests"], 1), 4)
                      for k, v in sorted(d[key].items(), key=lambda kv: (-kv[1], kv[0]))[:6]}
    for col, key in (("ip", "ips"), ("asn", "asns"), ("user_agent", "user_agents"),
                     ("payment_fingerprint", "payment_fingerprints"), ("template_id", "template_ids"),
                     ("template_sig", "template_sigs"), ("system_prompt_id", "system_prompt_ids")):
        for d in out.values():
            d["indicators"][key] = []
        f = t.filter(t[col].notnull())
        g = f.group_by(["campaign_id", col]).aggregate(n_acc=f.account_id.nunique(), c=f.count())
        g = g.filter(g.n_acc >= 2).order_by(["campaign_id", ibis.desc("n_acc"), ibis.desc("c"), col])
        for r in g.to_pyarrow().to_pylist():
            if len(out[r["campaign_id"]]["indicators"][key]) < 20:
                out[r["campaign_id"]]["indicators"][key].append(r[col])
    for d in out.values():
        d["indicators"]["cidrs"] = sorted({".".join(ip.split(".")[:3]) + ".0/24"
                                           for ip in d["indicators"]["ips"] if ip.count(".") == 3})
    w = ibis.window(group_by="campaign_id", order_by=["timestamp", "event_id"])
    s = t.mutate(rn=ibis.row_number().over(w))
    s = s.filter(s.rn < cfg.sample_prompts).order_by(["campaign_id", "rn"])
    for r in s.to_pyarrow().to_pylist():
        out[r["campaign_id"]]["sample_prompts"].append((r["user_text"] or "")[: cfg.sample_chars])
    return out


def test_campaign_figures_in_arrow_equal_the_engine_aggregates(world):
    """Arrow's hash aggregates and sorts give the SQL aggregates' figures: counts, sums with nulls, time span,
    jailbreak use, capability shares, indicators shared by two or more members in the engine's order (ties
    broken by value bytes), the first sample prompts by time then event id; on random members and on rows
    with the timestamps and some values shuffled and nulled."""
    import ibis

    from distillguard.detect.scoring import DetectConfig

    events, signals, _ = pipeline.stream_events(world)
    rng = np.random.default_rng(7)
    accts = sorted(set(events.column("account_id").to_pylist()))
    cfg = DetectConfig()
    for trial in range(3):
        members = [(a, f"c{rng.integers(0, 4)}") for a in accts if rng.random() < 0.6]
        pos = pc.index_in(events.column("account_id"), value_set=pa.array([a for a, _ in members]))
        rows = pc.indices_nonzero(pc.is_valid(pos))
        t = events.take(rows)
        for c in ("capability", "benchmark", "template_id", "template_sig", "system_prompt_id", "extraction_reason"):
            t = t.append_column(signals.schema.field(c), signals.column(c).take(rows))
        t = t.append_column("campaign_id", pa.array([c for _, c in members]).take(pos.take(rows)))
        if trial:  # equal timestamps (ties broken by event id), nulls in counted and indicator columns
            n = t.num_rows
            ts = t.column("timestamp").combine_chunks().take(pa.array(rng.integers(0, max(n // 50, 1), n)))
            t = t.set_column(t.schema.get_field_index("timestamp"), "timestamp", ts)
            for c in ("reasoning_tokens", "ip", "capability", "template_sig"):
                col = t.column(c).combine_chunks()
                t = t.set_column(t.schema.get_field_index(c), c,
                                 pc.if_else(pa.array(rng.random(n) < 0.2), pa.nulls(n, col.type), col))
        t = t.combine_chunks()
        plain = pa.table([pipeline._plain(c) for c in t.columns], names=t.column_names)
        got = pipeline._member_stats(t, cfg)
        assert got == _engine_stats(ibis.memtable(plain), cfg)
        assert sum(d["requests"] for d in got.values()) == t.num_rows
        assert any(v for d in got.values() for v in d["indicators"].values())
        assert all(len(d["sample_prompts"]) == min(cfg.sample_prompts, d["requests"]) for d in got.values())


def test_campaign_figures_take_columns_with_no_value_at_all():
    """Columns that hold no value (null-typed, as a table built from Python gives them) count as empty: the
    figures equal the engine's over the same rows with string columns."""
    import datetime as dt

    import ibis

    from distillguard.detect.scoring import DetectConfig

    n = 5
    cols = {"campaign_id": ["C1", "C1", "C2", "C2", "C2"], "account_id": ["a", "b", "c", "d", "d"],
            "event_id": [f"e{i}" for i in range(n)],
            "timestamp": pa.array([dt.datetime(2026, 1, 1, i, tzinfo=dt.timezone.utc) for i in range(n)]),
            "reasoning_tokens": pa.array([None] * n, pa.int64()), "output_tokens": pa.array([1, 2, 3, None, 5]),
            "user_text": ["x", "y", None, "z", "w"], "extraction_reason": pa.nulls(n), "ip": ["1.2.3.4"] * n}
    for c in ("capability", "benchmark", "asn", "user_agent", "payment_fingerprint", "template_id",
              "template_sig", "system_prompt_id"):
        cols[c] = pa.nulls(n)
    t = pa.table(cols)
    typed = pa.table([c.cast(pa.string()) if pa.types.is_null(c.type) else c for c in t.columns], names=t.column_names)
    cfg = DetectConfig()
    got = pipeline._member_stats(t, cfg)
    assert got == _engine_stats(ibis.memtable(typed), cfg)
    assert got["C2"]["indicators"]["ips"] == ["1.2.3.4"] and got["C1"]["reasoning_tokens"] == 0
    assert got["C2"]["sample_prompts"] == ["", "z", "w"]


def _shown(limit: str) -> str:
    """How this DuckDB version shows ``limit`` once set."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{limit}'")
    return con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]


def test_scan_caps_duckdb_memory_and_restores_it(world, monkeypatch):
    import ibis

    con = ibis.get_backend().con
    con.execute("SET memory_limit = '3GB'")
    con.execute("SET enable_progress_bar = true")
    setting = "SELECT current_setting('memory_limit'), current_setting('enable_progress_bar')"
    before = con.execute(setting).fetchall()[0]
    seen = []
    real = pipeline.account_features

    def spy(*a, **k):
        seen.append(con.execute(setting).fetchall()[0])
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "account_features", spy)
    res = scan(world)
    # the floor for a small scan, and no progress bar of DuckDB's over the scan's output
    assert seen == [(_shown(f"{pipeline.MIN_DUCKDB_MEMORY_MB}MB"), False)]
    assert con.execute(setting).fetchall()[0] == before == (_shown("3GB"), True)
    ids = res.accounts.column("account_id").to_pylist()
    assert ids == sorted(ids)  # accounts come out in a stable order


def test_duckdb_gets_what_the_budget_leaves(monkeypatch):
    monkeypatch.setattr(pipeline, "_rss_mb", lambda: 1500.0)
    assert pipeline.duckdb_memory_limit_mb(10_000) == 10_000 - 1500 - 10_000 * pipeline.DUCKDB_RESERVE_SHARE
    assert pipeline.duckdb_memory_limit_mb(2_000) == pipeline.MIN_DUCKDB_MEMORY_MB  # never below the floor
    monkeypatch.setattr(pipeline, "_rss_mb", lambda: 100.0)
    monkeypatch.setattr(pipeline, "MIN_DUCKDB_MEMORY_MB", 256)
    assert pipeline.duckdb_memory_limit_mb(950) == 950 - 100 - pipeline.DUCKDB_RESERVE_MB  # the reserve's floor
    monkeypatch.undo()
    assert pipeline._rss_mb() > 10  # this process, read from /proc


def test_kept_low_cardinality_columns_are_dictionary_encoded_with_the_same_values(world):
    whole, _, _ = pipeline.load_events([world])
    events, _, _ = pipeline.stream_events([world], chunk_rows=60)
    for name in pipeline._DICT_COLUMNS:
        col = events.column(name)
        assert pa.types.is_dictionary(col.type), name
        assert col.cast(col.type.value_type).to_pylist() == whole.column(name).to_pylist(), name
    assert events.schema.field("event_id").type == pa.string()  # one value per row: left plain


def test_a_chunk_reuses_the_pairs_of_a_chunk_still_being_computed(world):
    """The scan looks chunk k+1 up while chunk k's signals are computed on a helper thread: pairs first seen in
    chunk k are not computed again, and both chunks' rows come out as computed one after the other."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    whole, _, _ = pipeline.load_events([world])
    first, second = whole.slice(0, 70), whole.slice(40, 70)  # 30 rows in common
    gate, calls = threading.Event(), []

    def slow(events):
        calls.append(events.num_rows)
        gate.wait(10)
        return compute_signals(events)

    cache = pipeline._TextSignalCache(slow)
    with ThreadPoolExecutor(1) as ex:
        a = cache.submit(first, ex)
        b = cache.submit(second, ex)  # looked up while the first chunk is still being computed
        gate.set()
        got = pa.concat_tables([cache.finish(a), cache.finish(b)])
    pairs = lambda t: set(zip(t.column("system_text").to_pylist(), t.column("user_text").to_pylist()))  # noqa: E731
    assert calls[0] == len(pairs(first)) and sum(calls) == len(pairs(first) | pairs(second))
    assert got.equals(pa.concat_tables([compute_signals(first), compute_signals(second)]))


def test_text_cache_digests_tell_pairs_apart_and_match_across_calls():
    system = pa.array([None, "", "ab", "a", "ab", None, "x\u00e9"], pa.string())
    user = pa.array(["c", "c", "c", "bc", "c", "\x00c", ""], pa.string())
    d = pipeline._TextSignalCache._digests(system, user)
    assert d[2] == d[4] and len({d[i] for i in (0, 1, 2, 3, 5, 6)}) == 6  # null vs empty, where the cut falls
    # slices (Arrow offsets) give the same digests as whole arrays
    assert pipeline._TextSignalCache._digests(system.slice(2, 4), user.slice(2, 4)) == d[2:6]
    big = pa.array(["s"] * 3, pa.large_string())
    assert pipeline._TextSignalCache._digests(big, pa.array(["u"] * 3, pa.large_string()))[0] == \
        pipeline._TextSignalCache._digests(pa.array(["s"]), pa.array(["u"]))[0]


def test_an_error_computing_a_chunks_signals_reaches_the_caller(world):
    calls = []

    def broken(events):
        calls.append(events.num_rows)
        if len(calls) == 2:
            raise RuntimeError("detector plugin failed")
        return compute_signals(events)

    with pytest.raises(RuntimeError, match="detector plugin failed"):
        pipeline.stream_events([world], chunk_rows=60, signal_fn=broken)
    assert len(calls) >= 2

"""The scan pipeline: events -> signals -> account features -> scores -> campaigns -> findings."""

from __future__ import annotations

import contextlib

import csv
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import ibis
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from distillguard._alloc import paused_gc, release_heap, tune_malloc
from distillguard.detect.allowlist import Allowlist
from distillguard.detect.scoring import AccountScorer, Calibration, DetectConfig
from distillguard.features import account_features, time_columns
from distillguard.linking import LinkConfig, build_edges
from distillguard.linking.campaigns import find_campaigns
from distillguard.signals import compute_signals, signal_pool

__all__ = ["ScanResult", "Scanner", "scan", "stream_events", "ACCOUNTS_HEADER", "ATLAS"]

ACCOUNTS_HEADER = ("account_id", "score", "flagged", "campaign_id", "reasons")

ATLAS = {
    "extract": {"id": "AML.T0024.002", "name": "Extract AI Model"},
    "proxy": {"id": "AML.T0008.005", "name": "AI Service Proxies"},
    "jailbreak": {"id": "AML.T0054", "name": "LLM Jailbreak"},
}
_PROXY_KINDS = {"ip", "ip24", "asn", "user_agent"}


@dataclass
class ScanResult:
    """Everything a scan found. ``accounts`` has the accounts.csv columns plus ``raw``, ``own_score``,
    ``allowlisted`` and ``allowlist_reason``; ``evidence`` maps account id to its evidence items."""

    accounts: pa.Table
    campaigns: list[dict]
    evidence: dict[str, list[dict]]
    signals: pa.Table | None
    calibration: dict
    features: pa.Table
    edges: pa.Table
    rejected: int = 0
    timings: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # where the events came from
    generated_at: str = ""
    events: pa.Table | None = field(default=None, repr=False)  # the scanned events (for the report)

    def campaigns_doc(self) -> dict:
        return {"generated_at": self.generated_at, "calibration": self.calibration, "campaigns": self.campaigns}

    def flagged_accounts(self) -> list[str]:
        f = self.accounts.column("flagged").to_pylist()
        return [a for a, x in zip(self.accounts.column("account_id").to_pylist(), f) if x]

    def write(self, out_dir: str | Path, *, write_signals: bool = False) -> dict[str, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"accounts": out / "accounts.csv", "campaigns": out / "campaigns.json"}
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(ACCOUNTS_HEADER)
        cols = [self.accounts.column(c).to_pylist() for c in ACCOUNTS_HEADER]
        for a, s, f, c, r in zip(*cols):
            w.writerow([a, f"{s:.6f}".rstrip("0").rstrip(".") if s else "0", "true" if f else "false", c or "", r or ""])
        paths["accounts"].write_text(buf.getvalue(), encoding="utf-8")
        paths["campaigns"].write_bytes(orjson.dumps(self.campaigns_doc(), option=orjson.OPT_INDENT_2))
        if write_signals and self.signals is not None:
            import pyarrow.parquet as pq

            paths["signals"] = out / "signals.parquet"
            pq.write_table(self.signals, paths["signals"])
            paths["features"] = out / "features.parquet"
            pq.write_table(self.features, paths["features"])
        return paths


#: event columns no stage of a scan reads (signals use system_text/user_text); dropped while reading files
_UNUSED_COLUMNS = ("messages", "tools", "response", "reasoning_content", "extra", "source")
#: rows of events whose signals are computed together while files are streamed (bounds the full texts held)
SIGNAL_CHUNK_ROWS = 100_000
#: characters of ``user_text`` kept once signals are computed: what the campaign samples show
#: (``ScoringConfig.sample_chars``, 200; raise both together); ``system_text`` is dropped then
KEEP_TEXT_CHARS = 200


def _slim(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with the unused heavy text columns set to null (same schema, a fraction of the memory)."""
    cols = [pa.nulls(batch.num_rows, f.type) if f.name in _UNUSED_COLUMNS else batch.column(i)
            for i, f in enumerate(batch.schema)]
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema)


def _cut_texts(col, user_enc: pa.DictionaryArray | None) -> pa.DictionaryArray:
    """``user_text`` cut to :data:`KEEP_TEXT_CHARS` and dictionary-encoded. From ``user_enc`` (the column's
    dictionary encoding, no nulls) only its distinct texts are cut and encoded, and the row codes composed:
    the same array (cut texts first appear where their first full text does), without hashing every row
    again."""
    if user_enc is None or len(user_enc) != len(col):
        return pc.dictionary_encode(pc.utf8_slice_codeunits(col.combine_chunks(), 0, KEEP_TEXT_CHARS))
    cut = pc.dictionary_encode(pc.utf8_slice_codeunits(user_enc.dictionary, 0, KEEP_TEXT_CHARS))
    return pa.DictionaryArray.from_arrays(cut.indices.take(user_enc.indices), cut.dictionary)


def _after_signals(table: pa.Table, *, encode: bool = True, user_enc: pa.DictionaryArray | None = None) -> pa.Table:
    """What later stages keep of a chunk once its signals exist: same columns, ``system_text`` null,
    ``user_text`` cut to :data:`KEEP_TEXT_CHARS` and dictionary-encoded (each repeated prompt held once; a
    copy, so the chunk's full texts can be freed; ``user_enc``: :func:`_cut_texts`), and the
    :data:`_DICT_COLUMNS` dictionary-encoded (at 1M events the kept events take 268 MB instead of 360 MB;
    ``encode=False`` leaves them plain)."""
    cols = []
    for i, f in enumerate(table.schema):
        col = table.column(i)
        if f.name == "system_text" or f.name in _UNUSED_COLUMNS:
            col = pa.nulls(table.num_rows, f.type)
        elif f.name == "user_text":  # repeated prompts kept once: dictionary-encoded per chunk
            col = _cut_texts(col, user_enc)
        elif encode and f.name in _DICT_COLUMNS:  # few distinct values (customers, addresses, agents): kept once each
            col = pc.dictionary_encode(col.combine_chunks())
        cols.append(col)
    schema = table.schema
    for i, f in enumerate(schema):
        if cols[i].type != f.type:
            schema = schema.set(i, f.with_type(cols[i].type))
    return pa.Table.from_arrays(cols, schema=schema)


#: event columns of few distinct values, kept dictionary-encoded once a chunk's signals exist
_DICT_COLUMNS = ("org_id", "api_key_id", "ip", "asn", "user_agent", "payment_fingerprint", "model",
                 "reasoning_effort")


#: signal columns that describe the request itself rather than its text (taken from each row, never cached)
_ROW_SIGNAL_COLUMNS = ("event_id", "request_id", "account_id", "timestamp")


class _TextSignalCache:
    """Signals of each distinct (system, user) text computed once per scan, across chunks.

    A request's signals depend on its own texts alone, except ``capability``, which becomes ``tool_use``
    when the request offers tools. The cache keys each text pair by a 128-bit BLAKE2 digest (not the text,
    so the memory stays a few bytes per distinct text), computes signals for the first row of every unseen
    pair with its tools cleared, and builds each chunk's rows by ``take`` plus the per-row columns and the
    tools override. Streaming in chunks thus does no more text analysis than one call over the whole file.
    """

    def __init__(self, compute: Callable[[pa.Table], pa.Table]):
        self.compute = compute
        self.index: dict[bytes, int] = {}
        self.parts: list[pa.Table] = []
        self.store: pa.Table | None = None
        self.schema: pa.Schema | None = None
        self._asked = False  # a first chunk was sent to compute (which gives the schema)
        self.last_user_enc: pa.DictionaryArray | None = None  # user_text of the last chunk submitted, encoded

    @staticmethod
    def _digests(system: pa.Array, user: pa.Array) -> list[bytes]:
        """BLAKE2 digest of each (system, user) pair: fed slices of the Arrow buffers (no Python string per
        text); a null system text and an empty one differ, and the system text's length is hashed too."""
        from hashlib import blake2b

        def parts(arr: pa.Array) -> tuple[list[int], memoryview]:
            arr = arr.cast(pa.large_string())
            _, off_buf, data_buf = arr.buffers()
            off = np.frombuffer(off_buf, np.int64, len(arr) + 1, arr.offset * 8).tolist()
            return off, memoryview(data_buf if data_buf is not None else b"")

        s_off, s_data = parts(system)
        u_off, u_data = parts(user)
        valid = system.is_valid().to_numpy(zero_copy_only=False).tolist()
        out = []
        for k in range(len(user)):
            h = blake2b(digest_size=16)
            if valid[k]:
                a, b = s_off[k], s_off[k + 1]
                h.update(b"\x01" + (b - a).to_bytes(8, "little"))
                h.update(s_data[a:b])
            else:
                h.update(b"\x00")
            h.update(u_data[u_off[k]:u_off[k + 1]])
            out.append(h.digest())
        return out

    def __call__(self, chunk: pa.Table) -> pa.Table:
        return self.finish(self.submit(chunk))

    def submit(self, chunk: pa.Table, executor: Any = None) -> tuple:
        """Look the chunk's pairs up and start computing the signals of its unseen ones (on ``executor``, a
        ``concurrent.futures`` executor, when given, else now). Chunks must be :meth:`finish`-ed in the order
        they were submitted; a later chunk may already reuse the pairs of one still being computed."""
        import pyarrow.compute as pc

        from distillguard.signals import _distinct_pairs

        # the chunk's distinct pairs first (exact, vectorised), then one digest and lookup per distinct pair
        system = chunk.column("system_text").combine_chunks()
        raw_user = chunk.column("user_text").combine_chunks()
        user = pc.fill_null(raw_user, "")
        user_enc = pc.dictionary_encode(user)
        # the kept events reuse it (_after_signals): the same dictionary as encoding the texts again
        self.last_user_enc = user_enc if raw_user.null_count == 0 else None
        pair_of_row, first = _distinct_pairs(system, user, user_enc)
        digests = self._digests(system.take(first), user.take(first))
        slot = np.empty(len(first), np.int64)
        new_pairs: list[int] = []
        index = self.index
        for k, d in enumerate(digests):
            g = index.get(d)
            if g is None:
                g = index[d] = len(index)
                new_pairs.append(k)
            slot[k] = g
        job = None
        if new_pairs or not self._asked:
            self._asked = True
            sub = chunk.take(pa.array(first[new_pairs] if new_pairs else [], pa.int64()))
            for name in ("n_tools", "tools"):  # the text's own capability; tools are applied per row below
                if name in sub.column_names:
                    j = sub.column_names.index(name)
                    sub = sub.set_column(j, sub.schema.field(j), pa.nulls(sub.num_rows, sub.schema.field(j).type))
            job = executor.submit(self.compute, sub) if executor is not None else self.compute(sub)
        row_cols = {name: chunk.column(name) for name in _ROW_SIGNAL_COLUMNS + ("n_tools",)
                    if name in chunk.column_names}
        return job, slot[pair_of_row], row_cols, chunk.num_rows

    def finish(self, pending: tuple) -> pa.Table:
        """The signal rows of a chunk given to :meth:`submit` (waits for its computation)."""
        import pyarrow.compute as pc

        job, rows, row_cols, n = pending
        if job is not None:
            sig = job if isinstance(job, pa.Table) else job.result()
            self.schema = sig.schema
            text_cols = [c for c in sig.column_names if c not in _ROW_SIGNAL_COLUMNS]
            self.parts.append(sig.select(text_cols))
            self.store = None
        if self.store is None:  # chunked: taking rows from it needs no contiguous copy of every part
            self.store = pa.concat_tables(self.parts) if len(self.parts) > 1 else self.parts[0]
        cached = self.store.take(pa.array(rows, pa.int64()))
        cols = []
        for f in self.schema:
            if f.name in _ROW_SIGNAL_COLUMNS:
                col = row_cols[f.name] if f.name in row_cols else pa.nulls(n, f.type)
                cols.append(col.cast(f.type))
            elif f.name == "capability" and "n_tools" in row_cols:
                tools = pc.fill_null(pc.greater(row_cols["n_tools"], 0), False)
                cols.append(pc.if_else(tools, "tool_use", cached.column(f.name)).cast(f.type))
            else:
                cols.append(cached.column(f.name))
        return pa.Table.from_arrays(cols, schema=self.schema)


def stream_events(paths_or_store: Any, *, quarantine: str | Path | None = None, strict: bool = False,
                  fmt: str | None = None, mapping: str | None = None, with_signals: bool = True,
                  chunk_rows: int | None = None, timings: dict | None = None,
                  signal_fn: Callable[[pa.Table], pa.Table] | None = None) -> tuple[pa.Table, pa.Table | None, str]:
    """``(events, signals, reader name)`` like :func:`load_events`, but files are read as a stream: every
    :data:`SIGNAL_CHUNK_ROWS` rows the chunk's signals are computed and only its slim form is kept
    (:func:`_after_signals`), so full texts are never held for more than one chunk. Signals depend on each
    request's own text only, so they equal :func:`compute_signals` over the whole table; ``events`` keeps
    the :data:`~distillguard.schema.EVENT_SCHEMA` columns with the text columns cut (``user_text``
    dictionary-encoded). Arrow tables and stores are returned
    as :func:`load_events` does (signals computed here when missing). ``timings`` gets ``read_s`` and
    ``signals_s``. ``signal_fn``: computes one chunk's signals (default :func:`compute_signals`)."""
    from distillguard.schema import EVENT_SCHEMA

    compute = signal_fn or compute_signals
    cached = _TextSignalCache(compute)

    tm = timings if timings is not None else {}
    t0 = time.perf_counter()
    if isinstance(paths_or_store, pa.Table) or hasattr(paths_or_store, "events_table") or \
            _is_store_path(paths_or_store):
        events, signals, reader = load_events(paths_or_store, quarantine=quarantine, strict=strict, fmt=fmt,
                                              mapping=mapping)
        tm["read_s"] = time.perf_counter() - t0
        t = time.perf_counter()
        if with_signals and (signals is None or signals.num_rows != events.num_rows):
            signals = compute(events)
        tm["signals_s"] = time.perf_counter() - t
        return events, signals, reader
    from distillguard.io import Quarantine, read_events

    paths = [paths_or_store] if isinstance(paths_or_store, (str, Path)) else list(paths_or_store)
    limit = chunk_rows or SIGNAL_CHUNK_ROWS
    # the first chunks smaller (an eighth, a quarter, half of ``limit``): the signal workers start on the
    # first rows instead of idling while a whole chunk is read
    sizes = [max(1, limit // 8), max(1, limit // 4), max(1, limit // 2), limit] if chunk_rows is None else [limit]
    kept: list[pa.Table] = []
    sigs: list[pa.Table] = []
    pending: list[pa.RecordBatch] = []
    n_pending = 0
    read_s = sig_s = 0.0

    # a chunk's signals are computed on a helper thread (which waits on the signal workers) while this thread
    # reads and looks up the next chunk, so the workers are never idle between chunks; chunks finish in order
    in_flight: list[tuple] = []

    def finish_one() -> None:
        nonlocal sig_s
        t = time.perf_counter()
        sigs.append(cached.finish(in_flight.pop(0)))
        sig_s += time.perf_counter() - t

    def flush() -> None:
        nonlocal pending, n_pending, sig_s
        if not pending:
            return
        t = time.perf_counter()
        chunk = pa.Table.from_batches(pending, schema=EVENT_SCHEMA)
        pending, n_pending = [], 0
        if with_signals:
            in_flight.append(cached.submit(chunk, helper))
            kept.append(_after_signals(chunk, user_enc=cached.last_user_enc))
        else:
            kept.append(chunk)
        del chunk
        sig_s += time.perf_counter() - t
        while len(in_flight) > 1:
            finish_one()

    if quarantine is not None:
        Path(quarantine).write_bytes(b"")  # the quarantine appends; start this scan's file empty
    # the signal workers are forked now, while this process is small, and serve every chunk
    pool = signal_pool() if with_signals else contextlib.nullcontext()
    helper = ThreadPoolExecutor(1, thread_name_prefix="distillguard-signals")
    with pool, Quarantine(quarantine) as q, contextlib.ExitStack() as stack:
        stack.callback(helper.shutdown, wait=True, cancel_futures=True)
        stream = read_events([str(p) for p in paths], fmt=fmt or "auto", mapping=mapping, quarantine=q,
                             strict=strict, skip=_UNUSED_COLUMNS)  # nulled by _slim anyway
        ahead = _ReadAhead(stream, max_rows=limit if with_signals else 0)
        try:
            while True:
                t = time.perf_counter()
                batch = ahead.next()
                read_s += time.perf_counter() - t
                if batch is None:
                    break
                while batch.num_rows:  # chunks of exactly ``size`` rows (the last one smaller)
                    size = sizes[min(len(kept), len(sizes) - 1)]
                    part = batch.slice(0, size - n_pending)
                    batch = batch.slice(part.num_rows)
                    pending.append(part)
                    n_pending += part.num_rows
                    if n_pending >= size:
                        flush()
            flush()
            while in_flight:
                finish_one()
        finally:
            ahead.close()
    events = pa.concat_tables(kept) if kept else EVENT_SCHEMA.empty_table()
    signals = None
    if with_signals:
        signals = pa.concat_tables(sigs) if sigs else compute(EVENT_SCHEMA.empty_table())
    # read_s: time the scan waited for input (reading overlaps the signals of the previous chunk);
    # read_busy_s: time the reader itself spent (parsing, validation)
    tm["read_s"], tm["signals_s"], tm["read_busy_s"] = read_s, sig_s, ahead.busy_s
    return events, signals, "distillguard.io"


def _aligned(events: pa.Table, signals: pa.Table | None) -> bool:
    return (signals is not None and events.num_rows == signals.num_rows
            and events.column("event_id").equals(signals.column("event_id")))


def _joined(events: pa.Table, signals: pa.Table) -> pa.Table:
    joined = events
    for i, f in enumerate(signals.schema):
        if f.name not in events.column_names:
            joined = joined.append_column(f, signals.column(i))
    return joined


def _feature_inputs(events: pa.Table, signals: pa.Table, ev_t, sg_t) -> tuple:
    """What :func:`account_features` gets: when the signals are row-aligned with the events (as the stream
    builds them), one table of both (columns shared, nothing copied) and ``None``, which spares DuckDB a
    1M-row join (about half the stage's memory); otherwise the two tables as they are."""
    if not _aligned(events, signals):
        return ev_t, sg_t
    return ibis.memtable(_joined(events, signals)), None


def _account_codes(ids) -> tuple[pa.Array, pa.Array]:
    """``(codes, names)``: each account id as an int32 code numbered in the ids' byte order, and the ids by
    code (so sorting by code sorts by id)."""
    enc = pc.dictionary_encode(ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    order = pc.sort_indices(enc.dictionary).to_numpy()
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return pa.array(rank[enc.indices.to_numpy(zero_copy_only=False)]), enc.dictionary.take(pa.array(order))


def _features_table(events: pa.Table, signals: pa.Table | None, ev_t, sg_t, config) -> pa.Table:
    """:func:`account_features` run and sorted by account. On row-aligned tables (the stream's) the engine
    groups by an int32 account code instead of the id string (1M events: the stage 1.6-1.9 -> 1.35-1.45 s) and
    the ids are put back after, and the per-event time columns come from Arrow; the values are the same but
    for the last bit of some parallel float sums."""
    if not _aligned(events, signals):
        return account_features(ev_t, sg_t, config=config).to_pyarrow().sort_by("account_id")
    joined = _joined(events, signals)
    j = joined.schema.get_field_index("account_id")
    codes, names = _account_codes(joined.column(j))
    coded = joined.set_column(j, pa.field("account_id", pa.int32(), nullable=False), codes)
    if coded.column("timestamp").null_count == 0:  # the time columns from Arrow (1M events: ~0.15 s less)
        for name, col in time_columns(coded.column("timestamp")).items():
            coded = coded.append_column(name, col)
    out = account_features(ibis.memtable(coded), None, config=config).to_pyarrow().sort_by("account_id")
    k = out.schema.get_field_index("account_id")
    return out.set_column(k, out.schema.field(k).with_type(pa.string()),
                          names.take(out.column(k)).cast(pa.string()))


@contextlib.contextmanager
def _duckdb_memory_cap(budget_mb_per_m_events: float | None, n_events: int):
    """Caps the memory of Ibis's default DuckDB backend (where the in-process stages run) while the block
    runs: the scan's budget (``budget_mb_per_m_events`` per million events) less what this process already
    holds and a reserve for the Python side (:func:`duckdb_memory_limit_mb`), at least
    :data:`MIN_DUCKDB_MEMORY_MB`. Beyond
    the cap DuckDB spills to its temporary directory instead of growing. ``None`` or 0: no cap. DuckDB's
    progress bar is off meanwhile. Both settings are restored afterwards."""
    if not budget_mb_per_m_events:
        yield
        return
    from distillguard.store import _unrounded

    backend = ibis.get_backend()
    if getattr(backend, "name", "") != "duckdb":  # Ibis's default set to another engine: leave it alone
        yield
        return
    con = backend.con
    previous = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    bar = con.execute("SELECT current_setting('enable_progress_bar')").fetchall()[0][0]
    budget = budget_mb_per_m_events * n_events / 1e6
    con.execute(f"SET memory_limit = '{duckdb_memory_limit_mb(budget)}MB'")
    # DuckDB's own progress bar would print over the scan's output for queries of 2 s and more
    con.execute("SET enable_progress_bar = false")
    try:
        yield
    finally:
        con.execute("SET memory_limit = ?", [_unrounded(previous)])
        con.execute(f"SET enable_progress_bar = {'true' if bar else 'false'}")


def duckdb_memory_limit_mb(budget_mb: float) -> int:
    """DuckDB's share of a ``budget_mb`` memory budget for this process now (see :func:`_duckdb_memory_cap`):
    the budget less what the process holds and a reserve for the Python side of the later stages (edge and
    result tables grow with the traffic, so the reserve does too)."""
    reserve = max(DUCKDB_RESERVE_MB, DUCKDB_RESERVE_SHARE * budget_mb)
    return int(max(MIN_DUCKDB_MEMORY_MB, budget_mb - _rss_mb() - reserve))


def _rss_mb() -> float:
    """This process's resident memory in MB (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


#: the smallest DuckDB memory cap a scan sets (at 1M events the budget left is below it; with 512 MB the
#: linking queries ran 1.5-2 s slower, measured in docs/detection.md), and what it leaves the Python side
#: of the later stages
MIN_DUCKDB_MEMORY_MB = 768
DUCKDB_RESERVE_MB = 200
#: the reserve as a share of the budget, where that is more than DUCKDB_RESERVE_MB (5M events: 2 GB)
DUCKDB_RESERVE_SHARE = 0.2


class _ReadAhead:
    """Runs a batch iterator on a helper thread, with up to ``max_rows`` rows (and at least one batch) waiting
    for the consumer, so the next chunk is read and parsed while the current chunk's signals are computed. Batches are slimmed (:func:`_slim`) on the helper thread. The iterator's exceptions (a strict
    read's bad line) are raised, unchanged, by :meth:`next` in the consumer's thread."""

    _END = object()

    def __init__(self, stream, max_rows: int):
        import queue
        import threading

        self.stream = stream
        self.max_rows = max(0, max_rows)
        self.busy_s = 0.0
        self.queue: queue.Queue = queue.Queue()
        self.cond = threading.Condition()
        self.queued_rows = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, name="distillguard-read-ahead", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            it = iter(self.stream)
            while True:
                with self.cond:  # wait while enough rows are already waiting to be consumed
                    self.cond.wait_for(lambda: self.stop or self.queued_rows == 0
                                       or self.queued_rows < self.max_rows)
                    if self.stop:
                        return
                t = time.perf_counter()
                batch = next(it, self._END)
                if batch is not self._END:
                    batch = _slim(batch)
                self.busy_s += time.perf_counter() - t
                if batch is self._END:
                    self.queue.put((self._END, None))
                    return
                with self.cond:
                    self.queued_rows += batch.num_rows
                self.queue.put((batch, None))
        except BaseException as exc:  # handed to the consumer
            self.queue.put((None, exc))
        finally:
            close = getattr(self.stream, "close", None)
            if close is not None and self.stop:
                try:
                    close()
                except Exception:
                    pass

    def next(self) -> pa.RecordBatch | None:
        batch, exc = self.queue.get()
        if exc is not None:
            raise exc
        if batch is self._END:
            return None
        with self.cond:
            self.queued_rows -= batch.num_rows
            self.cond.notify_all()
        return batch

    def close(self) -> None:
        with self.cond:
            self.stop = True
            self.cond.notify_all()
        while self.thread.is_alive():  # unblock a helper waiting to put, then let it finish its batch
            try:
                self.queue.get(timeout=0.05)
            except Exception:
                pass
        self.thread.join()


def _is_store_path(src: Any) -> bool:
    paths = [src] if isinstance(src, (str, Path)) else src
    try:
        paths = list(paths)
    except TypeError:
        return False
    return len(paths) == 1 and str(paths[0]).endswith(".duckdb")


def load_events(paths_or_store: Any, *, quarantine: str | Path | None = None, strict: bool = False,
                fmt: str | None = None, mapping: str | None = None,
                slim: bool = True) -> tuple[pa.Table, pa.Table | None, str]:
    """``(events, stored signals or None, reader name)`` from files (JSONL, .jsonl.gz, Parquet, CSV), a
    ``.duckdb`` store, a :class:`distillguard.store.Store` or an Arrow table of events. With ``slim`` the
    columns no scan stage reads (:data:`_UNUSED_COLUMNS`) are nulled as files are read."""
    from distillguard.schema import EVENT_SCHEMA

    if isinstance(paths_or_store, pa.Table):
        return paths_or_store, None, "table"
    paths = [paths_or_store] if isinstance(paths_or_store, (str, Path)) else paths_or_store
    if hasattr(paths, "events_table"):
        return paths.events_table(), paths.signals_table(), "distillguard.store"
    paths = list(paths)
    if len(paths) == 1 and str(paths[0]).endswith(".duckdb"):
        from distillguard.store import Store

        if not Path(paths[0]).is_file():
            raise FileNotFoundError(f"{paths[0]}: no such store")
        with Store(str(paths[0])) as store:
            return store.events_table(), store.signals_table(), "distillguard.store"
    from distillguard.io import Quarantine, read_events

    if quarantine is not None:
        Path(quarantine).write_bytes(b"")  # the quarantine appends; start this scan's file empty
    with Quarantine(quarantine) as q:
        stream = read_events([str(p) for p in paths], fmt=fmt or "auto", mapping=mapping, quarantine=q,
                             strict=strict, skip=_UNUSED_COLUMNS if slim else ())
        batches = [_slim(b) for b in stream] if slim else list(stream)
    table = pa.Table.from_batches(batches, schema=EVENT_SCHEMA) if batches else EVENT_SCHEMA.empty_table()
    return table, None, "distillguard.io"


# ---------------------------------------------------------------------------------------------- scanner
class Scanner:
    """Reusable scanner: ``fit`` on a baseline once, then ``scan`` many traffic slices."""

    def __init__(self, config: DetectConfig | None = None, allowlist: Allowlist | None = None,
                 peer_intel: Any = None):
        self.config = config or DetectConfig()
        self.allowlist = allowlist or Allowlist()
        self.peer_intel = peer_intel  # distillguard.intel.PeerIntel: campaigns reported by peers
        self.scorer = AccountScorer(self.config)
        self.calibration_: Calibration | None = None

    # -- stage helpers
    def _link_config(self) -> LinkConfig:
        return LinkConfig.from_dict(self.config.linking or None)

    def signals(self, events: pa.Table) -> pa.Table:
        return compute_signals(events)

    def features(self, events: pa.Table, signals: pa.Table) -> pa.Table:
        ev_t, sg_t = ibis.memtable(events), ibis.memtable(signals)
        return _features_table(events, signals, ev_t, sg_t, self.config.features)

    def fit(self, baseline: Any | None = None, *, features: pa.Table | None = None, label: str = "baseline") -> Calibration:
        """Fit on known-benign traffic (paths, a table, or its feature table)."""
        if features is None:
            ev, sg, _ = load_events(baseline)
            features = self.features(ev, sg if sg is not None else self.signals(ev))
        features = self._drop_allowlisted(features)
        self.calibration_ = self.scorer.fit(features, assumed_benign=False, label=label)
        return self.calibration_

    def _drop_allowlisted(self, features: pa.Table) -> pa.Table:
        if not self.allowlist:
            return features
        keep = ~self.allowlist.mask(features.column("account_id").to_pylist(), features.column("org_id").to_pylist())
        return features.filter(pa.array(keep))

    def _score_and_link(self, features: pa.Table, events, signals, ev_t, sg_t, timings: dict,
                        say: Callable[[str], None]):
        """Scores and calibration from the feature table, then edges from the Ibis tables ``ev_t``/``sg_t``
        (on whatever backend they live: DuckDB here, Spark in :mod:`distillguard.engine.spark`) and campaigns.
        Returns ``(calibration, raw, own, evidence, allow_mask, edges, linked)``."""
        t = time.perf_counter()
        say("scoring accounts")
        if self.calibration_ is None:
            calibration = self.scorer.fit(self._drop_allowlisted(features), assumed_benign=True)
        else:
            calibration = self.calibration_
        raw, own, evidence = self.scorer.score(features)
        peer_edges = None
        if self.peer_intel is not None:  # peer-reported indicators: evidence naming the peer, score, links
            from distillguard.intel.peer import apply_to_scan

            raw, _, peer_edges = apply_to_scan(self.peer_intel, events, signals,
                                               features.column("account_id").to_pylist(), raw, evidence)
            own = self.scorer.squash(raw)
        timings["score_s"] = time.perf_counter() - t

        t = time.perf_counter()
        say("linking accounts into campaigns")
        accts = features.column("account_id").to_pylist()
        orgs = features.column("org_id").to_pylist()
        allow_mask = self.allowlist.mask(accts, orgs) if self.allowlist else np.zeros(len(accts), bool)
        edges = build_edges(ev_t, sg_t, config=self._link_config())
        if peer_edges is not None and peer_edges.num_rows:
            edges = pa.concat_tables([edges, peer_edges.cast(edges.schema)])
        # allowlisted accounts lend no evidence to the campaigns they are linked into
        scores_tbl = pa.table({"account_id": pa.array(accts, pa.string()),
                               "score": pa.array(np.where(allow_mask, 0.0, own), pa.float64())})
        linked = find_campaigns(edges, scores_tbl, config=self._link_config())
        release_heap()  # the linking stage's freed arrays are not carried into the findings as resident memory
        timings["link_s"] = time.perf_counter() - t
        return calibration, raw, own, evidence, allow_mask, edges, linked

    def scan(self, source: Any, *, out_dir: str | Path | None = None, strict: bool = False, fmt: str | None = None,
             mapping: str | None = None, progress: Callable[[str], None] | None = None) -> ScanResult:
        """Scan files, a store or an events table; with ``out_dir`` also write the outputs. Tunes glibc's
        malloc for the process once and pauses the cyclic GC while it runs (:mod:`distillguard._alloc`)."""
        tune_malloc()
        with paused_gc():
            return self._scan(source, out_dir=out_dir, strict=strict, fmt=fmt, mapping=mapping, progress=progress)

    def _scan(self, source: Any, *, out_dir, strict: bool, fmt, mapping, progress) -> ScanResult:
        cfg = self.config
        say = progress or (lambda _msg: None)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        quarantine = Path(out_dir) / "rejected.jsonl" if out_dir is not None else None
        if quarantine is not None:
            quarantine.parent.mkdir(parents=True, exist_ok=True)
        say("reading events and computing request signals")
        events, signals, reader = stream_events(source, quarantine=quarantine, strict=strict, fmt=fmt,
                                                mapping=mapping, timings=timings,
                                                signal_fn=self.signals)
        if quarantine is not None and not quarantine.exists():
            quarantine.write_bytes(b"")

        with _duckdb_memory_cap(cfg.memory_budget_mb_per_m_events, events.num_rows):
            t = time.perf_counter()
            say("computing account features")
            ev_t, sg_t = ibis.memtable(events), ibis.memtable(signals)
            features = _features_table(events, signals, ev_t, sg_t, cfg.features)
            timings["features_s"] = time.perf_counter() - t

            calibration, raw, own, evidence, allow_mask, edges, linked = self._score_and_link(
                features, events, signals, ev_t, sg_t, timings, say)

            t = time.perf_counter()
            say("building findings")
            builder = _Findings(self, events, signals, features, edges, linked, raw, own, evidence, allow_mask,
                                calibration)
            result = builder.build()
            timings["findings_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        result.timings = timings
        result.events = events
        result.rejected = _count_lines(quarantine) if quarantine is not None else 0
        result.stages = {"read": reader}
        if out_dir is not None:
            result.write(out_dir, write_signals=cfg.write_signals)
        return result


def scan(paths_or_store: Any, *, out_dir: str | Path | None = None, config: DetectConfig | None = None,
         baseline: Any | None = None, allowlist: Allowlist | str | Path | None = None, strict: bool = False,
         fmt: str | None = None, mapping: str | None = None,
         progress: Callable[[str], None] | None = None, peer_intel: Any = None) -> ScanResult:
    """Scan traffic and return (and, with ``out_dir``, write) the findings. See docs/detection.md.
    ``peer_intel``: a :class:`distillguard.intel.PeerIntel` whose matches raise linked accounts' scores."""
    if allowlist is not None and not isinstance(allowlist, Allowlist):
        allowlist = Allowlist.load(allowlist)
    scanner = Scanner(config, allowlist, peer_intel)
    if baseline is not None:
        scanner.fit(baseline, label=_describe(baseline))
    return scanner.scan(paths_or_store, out_dir=out_dir, strict=strict, fmt=fmt, mapping=mapping, progress=progress)


def _describe(src: Any) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, (list, tuple)):
        return ",".join(map(str, src))
    return "baseline table"


def _count_lines(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


class _Findings:
    """Turns scores and the linking stage's :class:`~distillguard.linking.CampaignResult` into findings."""

    def __init__(self, scanner: Scanner, events, signals, features, edges, linked, raw, own, evidence,
                 allow_mask, calibration: Calibration):
        self.s, self.cfg = scanner, scanner.config
        self.events, self.signals, self.features, self.edges = events, signals, features, edges
        self.linked, self.raw, self.own, self.evidence = linked, raw, own, evidence
        self.allow_mask, self.calibration = allow_mask, calibration
        self.accts = features.column("account_id").to_pylist()

    def build(self) -> ScanResult:
        th = self.calibration.threshold
        n = len(self.accts)
        ls = self.linked.account_scores
        prop = dict(zip(ls.column("account_id").to_pylist(), ls.column("score").to_pylist()))
        camp_map = dict(zip(self.linked.membership.column("account_id").to_pylist(),
                            self.linked.membership.column("campaign_id").to_pylist()))
        camps = {c["campaign_id"]: c for c in self.linked.campaign_records()}
        camp_of = [camp_map.get(a) for a in self.accts]
        lifted = np.array([float(prop.get(a, o) or 0.0) for a, o in zip(self.accts, self.own)])
        # a campaign lifts a member only when the member is nearly flagged on its own or has a strong tie (shared
        # payment, synchronised timing, peer intel) to another member: a shared generic template, a NAT address
        # or a few disjoint homework items must not drag bystanders into a campaign's score
        eligible = (self.own >= self.cfg.propagate_min_own) | self._strongly_tied(camp_of)
        final = np.round(np.clip(np.where(eligible, np.maximum(self.own, lifted), self.own), 0.0, 1.0), 6)
        for i in np.nonzero(final > np.round(self.own, 6) + 1e-12)[0]:  # rounding alone is no lift
            c = camps[camp_of[i]]
            self.evidence[i].append({
                "signal": "campaign", "value": round(float(final[i]), 4), "threshold": round(th, 4),
                "direction": ">", "contribution": None,
                "detail": f"member of campaign {camp_of[i]} (score {c['score']:.3f}); own score {self.own[i]:.3f}"})
        flagged = (final >= th) & ~self.allow_mask
        org_ids = self.features.column("org_id").to_pylist()
        allow_reasons = [self.s.allowlist.reason(a, o) if m else None
                         for a, o, m in zip(self.accts, org_ids, self.allow_mask)]
        reasons = []
        for i in range(n):
            names = [e["signal"] for e in self.evidence[i] if e["signal"] != "campaign"][:4]
            if any(e["signal"] == "campaign" for e in self.evidence[i]):
                names.append(f"campaign:{camp_of[i]}")
            if allow_reasons[i]:
                names.insert(0, f"allowlisted:{allow_reasons[i]}")
            reasons.append(";".join(x.replace(";", ",") for x in names))
        accounts = pa.table({
            "account_id": pa.array(self.accts, pa.string()),
            "score": pa.array(final, pa.float64()),
            "flagged": pa.array(flagged, pa.bool_()),
            "campaign_id": pa.array(camp_of, pa.string()),
            "reasons": pa.array(reasons, pa.string()),
            "raw": pa.array(self.raw, pa.float64()),
            "own_score": pa.array(self.own, pa.float64()),
            "allowlisted": pa.array(self.allow_mask, pa.bool_()),
            "allowlist_reason": pa.array(allow_reasons, pa.string()),
        })
        campaigns = self._campaign_docs(camps, camp_of, flagged)
        return ScanResult(
            accounts=accounts, campaigns=campaigns,
            evidence={a: self.evidence[i] for i, a in enumerate(self.accts) if self.evidence[i]},
            signals=self.signals, calibration=self.calibration.to_dict(), features=self.features, edges=self.edges,
            generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def _strongly_tied(self, camp_of: list) -> np.ndarray:
        out = np.zeros(len(self.accts), dtype=bool)
        e = self.edges
        if e.num_rows == 0:
            return out
        import pyarrow.compute as pc

        e = e.filter(pc.is_in(e.column("kind"), pa.array(sorted(self.cfg.strong_edge_kinds), pa.string())))
        camp = dict(zip(self.accts, camp_of))
        index = {a: i for i, a in enumerate(self.accts)}
        for a, b in zip(e.column("src").to_pylist(), e.column("dst").to_pylist()):
            ca = camp.get(a)
            if ca is not None and ca == camp.get(b):
                out[index[a]] = out[index[b]] = True
        return out

    def _campaign_docs(self, camps: dict[str, dict], camp_of: list, flagged: np.ndarray) -> list[dict]:
        if not camps:
            return []
        th = self.calibration.threshold
        members: dict[str, list[int]] = {}
        for i, c in enumerate(camp_of):
            if c is not None:
                members.setdefault(c, []).append(i)
        member_rows = [(self.accts[i], c) for c, m in members.items() for i in m]
        stats = _campaign_stats(self.events, self.signals, member_rows, self.cfg)
        docs = []
        for cid, camp in sorted(camps.items(), key=lambda kv: (-kv[1]["score"], kv[0])):
            idx = members.get(cid, [])
            st = stats.get(cid, {})
            score = float(camp["score"])
            is_flagged = score >= th and any(flagged[i] for i in idx)
            kinds = {e["kind"] for e in camp.get("edges") or []}
            atlas = []
            if is_flagged:
                atlas.append(ATLAS["extract"])
                if kinds & _PROXY_KINDS or len(idx) >= 3:
                    atlas.append(ATLAS["proxy"])
                if st.get("jailbreak"):
                    atlas.append(ATLAS["jailbreak"])
            tells: dict[str, dict] = {}
            for i in idx:
                for e in self.evidence[i]:
                    if e["signal"] == "campaign":
                        continue
                    cur = tells.setdefault(e["signal"], {"signal": e["signal"], "value": 0.0, "threshold": e["threshold"],
                                                         "direction": e["direction"], "accounts": 0, "detail": ""})
                    cur["accounts"] += 1
                    cur["value"] += e["value"] or 0.0
            for t in tells.values():
                t["value"] = round(t["value"] / t["accounts"], 4)
                t["detail"] = f"mean value over the {t['accounts']} of {len(idx)} member accounts where it fired"
            ev = [{"signal": "member_evidence", "value": camp.get("evidence"), "threshold": None, "direction": ">",
                   "detail": "mean own score of the stronger half of the members"},
                  {"signal": "cohesion", "value": camp.get("cohesion"), "threshold": None, "direction": ">",
                   "detail": "share of the members' link weight that stays inside the campaign"}]
            docs.append({
                "campaign_id": cid, "score": round(score, 4), "flagged": bool(is_flagged),
                "accounts": camp.get("accounts") or sorted(self.accts[i] for i in idx), "n_accounts": len(idx),
                "n_flagged_accounts": int(sum(bool(flagged[i]) for i in idx)),
                "first_seen": st.get("first_seen"), "last_seen": st.get("last_seen"),
                "requests": st.get("requests", 0), "reasoning_tokens": st.get("reasoning_tokens", 0),
                "output_tokens": st.get("output_tokens", 0),
                "edges": camp.get("edges") or [],
                "capabilities": st.get("capabilities", {}), "benchmarks": st.get("benchmarks", {}),
                "sample_prompts": st.get("sample_prompts", []), "indicators": st.get("indicators", {}),
                "atlas": atlas,
                "evidence": ev + sorted(tells.values(), key=lambda e: (-e["accounts"], e["signal"]))[:8],
            })
        return docs


def _iso(ts) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:  # Spark hands timestamps back naive, in its session time zone (UTC)
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _campaign_stats(events: pa.Table, signals: pa.Table, member_rows: list[tuple[str, str]],
                    cfg: DetectConfig) -> dict[str, dict]:
    """Volume, time span, capability mix, indicators and sample prompts per campaign (Ibis over DuckDB)."""
    mem = ibis.memtable(pa.table({"account_id": [a for a, _ in member_rows], "campaign_id": [c for _, c in member_rows]}))

    def _ibis(t):  # an Ibis table (e.g. on Spark, distillguard.engine.spark) as is; Arrow as a memtable
        return t if isinstance(t, ibis.expr.types.Table) else ibis.memtable(t)

    ev_cols = ["event_id", "account_id", "timestamp", "ip", "asn", "user_agent", "payment_fingerprint",
               "output_tokens", "reasoning_tokens", "user_text"]
    sg_cols = ["capability", "benchmark", "template_id", "template_sig", "system_prompt_id", "extraction_reason"]
    if isinstance(events, pa.Table) and isinstance(signals, pa.Table) and _aligned(events, signals):
        # row-aligned Arrow tables (the stream's): the members' rows taken by position, no engine join
        members = pa.array([a for a, _ in member_rows], pa.string())
        pos = pc.index_in(events.column("account_id"), value_set=members)
        rows = pc.indices_nonzero(pc.is_valid(pos))
        t = events.select(ev_cols).take(rows)
        for c in sg_cols:
            t = t.append_column(signals.schema.field(c), signals.column(c).take(rows))
        camp = pa.array([c for _, c in member_rows], pa.string()).take(pos.take(rows))
        t = t.append_column("campaign_id", camp)
    else:
        ev = _ibis(events).select(ev_cols)
        sg = _ibis(signals).select(["event_id"] + sg_cols)
        t = ev.join(mem, "account_id").left_join(sg, "event_id").drop("event_id_right")
        t = t.to_pyarrow()  # members' events only: joined once, then several small aggregates
    return _member_stats(t.combine_chunks(), cfg)


def _plain(col) -> pa.Array:
    """A column as a plain (not dictionary-encoded) array; one with no value at all (null-typed, which the
    string kernels and hash aggregates do not take) as null strings."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_null(col.type):
        return col.cast(pa.string())
    return col.dictionary_decode() if pa.types.is_dictionary(col.type) else col


def _member_stats(t: pa.Table, cfg: DetectConfig) -> dict[str, dict]:
    """:func:`_campaign_stats` from the members' rows (an Arrow table with ``campaign_id``), in Arrow's hash
    aggregates and sorts: strings order by their bytes, as the engines order them."""
    camp = _plain(t.column("campaign_id"))
    reason = pc.dictionary_encode(_plain(t.column("extraction_reason")))  # few distinct reasons: tested once each
    jail_of = pc.fill_null(pc.match_substring(pc.utf8_lower(reason.dictionary), "jailbreak"), False)
    jail = pc.fill_null(jail_of.take(reason.indices), False)
    base = pa.table({"campaign_id": camp, "timestamp": t.column("timestamp"),
                     "reasoning_tokens": pc.fill_null(t.column("reasoning_tokens"), 0),
                     "output_tokens": pc.fill_null(t.column("output_tokens"), 0),
                     "jailbreak": pc.cast(jail, pa.int64())})
    base = base.group_by("campaign_id", use_threads=False).aggregate([
        ("timestamp", "min"), ("timestamp", "max"), ("campaign_id", "count"), ("reasoning_tokens", "sum"),
        ("output_tokens", "sum"), ("jailbreak", "sum")])
    out: dict[str, dict] = {}
    for r in base.to_pylist():
        out[r["campaign_id"]] = {
            "first_seen": _iso(r["timestamp_min"]), "last_seen": _iso(r["timestamp_max"]),
            "requests": int(r["campaign_id_count"]), "reasoning_tokens": int(r["reasoning_tokens_sum"] or 0),
            "output_tokens": int(r["output_tokens_sum"] or 0), "jailbreak": bool(r["jailbreak_sum"]),
            "capabilities": {}, "benchmarks": {}, "sample_prompts": [],
            "indicators": {k: [] for k in ("ips", "cidrs", "asns", "user_agents", "payment_fingerprints",
                                           "template_ids", "template_sigs", "system_prompt_ids")}}
    accounts = _plain(t.column("account_id"))

    def by_value(col: str) -> pa.Table:
        """(campaign_id, v, n_acc, c) over the rows where ``col`` is not null."""
        v = _plain(t.column(col))
        keep = pc.is_valid(v)
        g = pa.table({"campaign_id": camp.filter(keep), "v": v.filter(keep), "account_id": accounts.filter(keep)})
        g = g.group_by(["campaign_id", "v"], use_threads=False).aggregate(
            [("account_id", "count_distinct"), ("account_id", "count")])
        return g.rename_columns(["campaign_id", "v", "n_acc", "c"])

    # the nine aggregates are independent single-threaded Arrow calls (the GIL released): two at a time
    cols = ("capability", "benchmark", "ip", "asn", "user_agent", "payment_fingerprint", "template_id",
            "template_sig", "system_prompt_id")
    with ThreadPoolExecutor(2, thread_name_prefix="distillguard-stats") as pool:
        grouped = dict(zip(cols, pool.map(by_value, cols)))
    for col, key in (("capability", "capabilities"), ("benchmark", "benchmarks")):
        g = grouped[col]
        for c, v, n in zip(*(g.column(x).to_pylist() for x in ("campaign_id", "v", "c"))):
            d = out[c]
            d[key][v] = d[key].get(v, 0) + n
        for d in out.values():
            tot = max(d["requests"], 1)
            d[key] = {k: round(v / tot, 4) for k, v in sorted(d[key].items(), key=lambda kv: (-kv[1], kv[0]))[:6]}
    # indicators: values shared by two or more member accounts, most accounts first (then rows, then value)
    for col, key in (("ip", "ips"), ("asn", "asns"), ("user_agent", "user_agents"),
                     ("payment_fingerprint", "payment_fingerprints"), ("template_id", "template_ids"),
                     ("template_sig", "template_sigs"), ("system_prompt_id", "system_prompt_ids")):
        g = grouped[col]
        g = g.filter(pc.greater_equal(g.column("n_acc"), 2))
        g = g.take(pc.sort_indices(g, [("campaign_id", "ascending"), ("n_acc", "descending"),
                                       ("c", "descending"), ("v", "ascending")]))
        for c, v in zip(g.column("campaign_id").to_pylist(), g.column("v").to_pylist()):
            lst = out[c]["indicators"][key]
            if len(lst) < 20:
                lst.append(v)
    for d in out.values():
        ips = d["indicators"]["ips"]
        d["indicators"]["cidrs"] = sorted({".".join(ip.split(".")[:3]) + ".0/24" for ip in ips if ip.count(".") == 3})
    # a few sample prompts per campaign (first by time, then event id), truncated
    if t.num_rows:
        order = pc.sort_indices(pa.table({"c": camp, "ts": t.column("timestamp"), "e": _plain(t.column("event_id"))}),
                                [("c", "ascending"), ("ts", "ascending"), ("e", "ascending")])
        codes = pc.dictionary_encode(camp.take(order)).indices.to_numpy(zero_copy_only=False)
        new = np.concatenate(([True], codes[1:] != codes[:-1]))
        starts = np.flatnonzero(new)
        rank = np.arange(len(codes)) - np.repeat(starts, np.diff(np.append(starts, len(codes))))
        pick = np.flatnonzero(rank < cfg.sample_prompts)
        rows = order.take(pa.array(pick))
        for c, text in zip(camp.take(rows).to_pylist(), _plain(t.column("user_text")).take(rows).to_pylist()):
            out[c]["sample_prompts"].append((text or "")[: cfg.sample_chars])
    return out


_MINI_REPORT = """<!doctype html><html><head><meta charset="utf-8"><title>distillguard findings</title></head><body>
<h1>distillguard findings</h1><p>Threshold {{ cal.threshold }} ({{ cal.baseline }}), target FPR {{ cal.target_fpr }}.</p>
<h2>Campaigns</h2><ul>{% for c in campaigns %}<li>{{ c.campaign_id }}: score {{ c.score }}, {{ c.n_accounts }} accounts,
flagged {{ c.flagged }}</li>{% endfor %}</ul>
<h2>Flagged accounts</h2><ul>{% for a in flagged %}<li>{{ a.account_id }} ({{ a.score }}): {{ a.reasons }}</li>{% endfor %}</ul>
</body></html>"""


def write_report(result: ScanResult, out_dir: str | Path) -> tuple[Path, str | None]:
    """report.html through :mod:`distillguard.report`; ``(path, warning)``. When that part is absent or
    fails, a bare autoescaped summary page is written instead and the warning says why."""
    out = Path(out_dir) / "report.html"
    try:
        from distillguard.report.render import render_report

        render_report(result.accounts.select(list(ACCOUNTS_HEADER)), result.campaigns_doc(),
                      events=result.events, signals=result.signals, edges=result.edges, out_path=out)
        return out, None
    except Exception as exc:  # the report is a view of the findings; never lose the findings over it
        warning = f"report module unavailable or failed ({type(exc).__name__}: {exc}); wrote a plain summary"
    import jinja2

    env = jinja2.Environment(autoescape=True)
    flagged = [r for r in result.accounts.select(["account_id", "score", "flagged", "reasons"]).to_pylist()
               if r["flagged"]]
    out.write_text(env.from_string(_MINI_REPORT).render(cal=result.calibration, campaigns=result.campaigns,
                                                        flagged=flagged[:500]), encoding="utf-8")
    return out, warning

"""Per-request signals: reasoning-extraction score, capability tag, public task-set match and prompt-template
fingerprints (docs/detectors.md, docs/architecture.md "signals").

:func:`compute_signals` works on a whole events table: it deduplicates (system, user) texts first, analyses
each distinct text once and spreads the results back to the rows. :func:`score_request` runs the same code
on one request for the real-time gateway.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
from functools import lru_cache
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .benchmark import BenchmarkIndex
from .core import Analysis, analyse

__all__ = [
    "SIGNAL_SCHEMA",
    "SIGNAL_INPUTS",
    "compute_signals",
    "score_request",
    "score_requests",
    "analyse",
    "BenchmarkIndex",
    "default_benchmark_index",
    "signal_pool",
]

_TS = pa.timestamp("us", tz="UTC")

SIGNAL_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("timestamp", _TS),
        pa.field("extraction_score", pa.float64()),
        pa.field("extraction_reason", pa.string()),
        pa.field("capability", pa.string()),
        pa.field("benchmark", pa.string()),
        pa.field("benchmark_item", pa.string()),
        pa.field("benchmark_score", pa.float64()),
        pa.field("template_id", pa.string()),
        pa.field("template_sig", pa.int64()),
        pa.field("system_prompt_id", pa.string()),
        pa.field("text_len", pa.int32()),
    ]
)
#: event columns compute_signals reads (``tools`` is optional when ``n_tools`` is present)
SIGNAL_INPUTS = ("event_id", "request_id", "account_id", "timestamp", "system_text", "user_text", "n_tools")

_NULL_SYS = "\x00"


@lru_cache(maxsize=1)
def default_benchmark_index() -> BenchmarkIndex:
    """The index of the public task sets in the corpora folder (cached on disk), or an empty index."""
    try:
        return BenchmarkIndex.from_corpora()
    except (OSError, ValueError):
        return BenchmarkIndex.empty()


def _column(t: pa.Table, name: str, n: int, typ=pa.string()) -> pa.ChunkedArray | pa.Array:
    if name in t.column_names:
        col = t.column(name)
        return col
    return pa.nulls(n, typ)


def compute_signals(events: pa.Table | pa.RecordBatch, *, detectors: Iterable | None = None,
                    benchmark_index: BenchmarkIndex | None = None) -> pa.Table:
    """One row of :data:`SIGNAL_SCHEMA` per event, in the same order.

    ``benchmark_index``: defaults to :func:`default_benchmark_index`; pass ``BenchmarkIndex.empty()`` to skip
    the match. ``detectors``: extra request-level detector instances (:class:`distillguard.api.Detector`)
    whose output columns are appended to the table.
    """
    if isinstance(events, pa.RecordBatch):
        events = pa.Table.from_batches([events])
    missing = [c for c in ("event_id", "account_id", "user_text") if c not in events.column_names]
    if missing:
        raise ValueError(f"events table lacks column(s) {', '.join(missing)} needed for signals")
    n = events.num_rows
    if benchmark_index is None:
        benchmark_index = default_benchmark_index()
    system = _column(events, "system_text", n).cast(pa.large_string())
    user = pc.fill_null(events.column("user_text").cast(pa.large_string()), "")
    if isinstance(system, pa.ChunkedArray):
        system = system.combine_chunks()
    if isinstance(user, pa.ChunkedArray):
        user = user.combine_chunks()
    idx, first = _distinct_pairs(system, user)
    # a system text of a single NUL character counts as none (as it always has)
    sys_u = system.take(first)
    sys_u = pc.if_else(pc.equal(sys_u, _NULL_SYS), pa.nulls(len(sys_u), sys_u.type), sys_u)
    a = _analyse_pooled(sys_u, user.take(first), benchmark_index)
    has_tools = _has_tools(events, n)
    take = pa.array(idx, pa.int64())
    cap = a["capability"].take(take)
    if has_tools.any():
        cap = pc.if_else(pa.array(has_tools), "tool_use", cap)
    cols = {
        "event_id": events.column("event_id").cast(pa.string()),
        "request_id": _column(events, "request_id", n).cast(pa.string()),
        "account_id": events.column("account_id").cast(pa.string()),
        "timestamp": _column(events, "timestamp", n, _TS).cast(_TS),
        "extraction_score": pa.array(a["extraction_score"][idx], pa.float64()),
        "extraction_reason": a["extraction_reason"].take(take),
        "capability": cap,
        "benchmark": a["benchmark"].take(take),
        "benchmark_item": a["benchmark_item"].take(take),
        "benchmark_score": pa.array(a["benchmark_score"][idx], pa.float64()),
        "template_id": a["template_id"].take(take),
        "template_sig": pa.array(a["template_sig"][idx], pa.int64()),
        "system_prompt_id": a["system_prompt_id"].take(take),
        "text_len": pa.array(a["text_len"][idx], pa.int32()),
    }
    out = pa.Table.from_arrays([cols[f.name] for f in SIGNAL_SCHEMA], schema=SIGNAL_SCHEMA)
    for det in detectors or ():
        extra = det.score(events)
        for name in det.outputs:
            if name not in out.column_names:
                out = out.append_column(name, extra.column(name))
    return out


#: distinct texts from which compute_signals splits the work over forked worker processes
POOL_MIN_TEXTS = 20_000
#: distinct texts per task of the worker pool
POOL_CHUNK_TEXTS = 16_000
_POOL_STATE: tuple | None = None


def signal_workers() -> int:
    """Worker processes for large batches: ``DISTILLGUARD_SIGNAL_WORKERS`` or the usable CPUs (at most 4)."""
    env = os.environ.get("DISTILLGUARD_SIGNAL_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"DISTILLGUARD_SIGNAL_WORKERS: not an integer: {env!r}") from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


#: the columns of an :class:`Analysis` that compute_signals uses: text ones travel as Arrow arrays
_STRING_FIELDS = ("extraction_reason", "capability", "benchmark", "benchmark_item", "template_id",
                  "system_prompt_id")
_ARRAY_FIELDS = ("extraction_score", "benchmark_score", "template_sig", "text_len")


def _distinct_pairs(system: pa.Array, user: pa.Array, user_enc: pa.DictionaryArray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(index of each row's distinct (system, user) pair, first row of each pair); pairs are told apart
    exactly (by the dictionary codes of both texts, null system apart from any string). ``user_enc``: the
    dictionary encoding of ``user`` when the caller already has it."""
    n = len(user)
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    s_enc = pc.dictionary_encode(system)
    u_enc = user_enc if user_enc is not None else pc.dictionary_encode(user)
    s_idx = pc.fill_null(s_enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    u_idx = u_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    code = (s_idx + 1) * len(u_enc.dictionary) + u_idx
    _, first, idx = np.unique(code, return_index=True, return_inverse=True)
    return idx.reshape(-1), first


def _packed(a: Analysis) -> dict:
    out = {f: pa.array(getattr(a, f), pa.string()) for f in _STRING_FIELDS}
    out.update({f: getattr(a, f) for f in _ARRAY_FIELDS})
    return out


def _analyse_chunk(bounds: tuple[int, int]) -> dict:
    sys_u, user_u, index = _POOL_STATE
    lo, hi = bounds
    return _packed(analyse(sys_u.slice(lo, hi - lo), user_u.slice(lo, hi - lo), benchmark_index=index))


def _can_fork() -> bool:
    # a pool worker (a daemon) may not start processes of its own
    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


def _bounds(n: int, workers: int) -> list[tuple[int, int]]:
    # chunks of about POOL_CHUNK_TEXTS: the per-text arrays of one chunk stay small enough for the caches
    # a multiple of the workers, so no worker idles through the last round
    parts = -(-max(workers, -(-n // POOL_CHUNK_TEXTS)) // workers) * workers
    cuts = np.linspace(0, n, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]


def _joined(chunks: list[dict]) -> dict:
    out = {f: pa.concat_arrays([c[f] for c in chunks]) for f in _STRING_FIELDS}
    out.update({f: np.concatenate([c[f] for c in chunks]) for f in _ARRAY_FIELDS})
    return out


def _analyse_pooled(sys_u: pa.Array, user_u: pa.Array, index: BenchmarkIndex) -> dict:
    """The columns compute_signals needs of :func:`analyse` over the distinct texts (Arrow arrays for text,
    numpy for numbers); large inputs are cut into contiguous chunks analysed by worker processes (each
    text's signals depend on that text alone, so the result is identical): the persistent pool of an open
    :func:`signal_pool` when it serves this benchmark index, else a pool forked for this call."""
    global _POOL_STATE
    n = len(user_u)
    active = _ACTIVE_POOL
    if active is not None and active.index is index and n >= active.min_texts:
        return _joined(active.map(sys_u, user_u, _bounds(n, active.workers)))
    workers = signal_workers()
    if n < POOL_MIN_TEXTS or workers < 2 or not _can_fork():
        return _packed(analyse(sys_u, user_u, benchmark_index=index))
    _POOL_STATE = (sys_u, user_u, index)  # inherited by the forked workers, never pickled
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            chunks = pool.map(_analyse_chunk, _bounds(n, workers), chunksize=1)
    finally:
        _POOL_STATE = None
    return _joined(chunks)


#: distinct texts from which a call is sent to an open :func:`signal_pool` (no fork to pay for)
PERSISTENT_POOL_MIN_TEXTS = 4_000
_ACTIVE_POOL: "_PersistentPool | None" = None
_WORKER_INDEX: BenchmarkIndex | None = None  # the benchmark index of a persistent pool's workers


def _compact(arr: pa.Array) -> pa.Array:
    """A slice with buffers of its own (pickling a slice may carry its parent's whole buffers)."""
    return pa.concat_arrays([arr]) if arr.offset or len(arr) else arr


def _analyse_sent(texts: tuple[pa.Array, pa.Array]) -> dict:
    # the worker keeps its freed memory for the next task (no malloc_trim between tasks): handing it back
    # made every task fault in and zero its arrays afresh (about 3 CPU-s per 1M events, docs/detection.md)
    sys_u, user_u = texts
    return _packed(analyse(sys_u, user_u, benchmark_index=_WORKER_INDEX))


class _PersistentPool:
    """Worker processes forked once (while the parent is still small) and fed every chunk of a stream: no
    fork per chunk, no copy-on-write faults in a large parent, and the workers' regex DFAs and allocator
    stay warm. Texts travel to the workers pickled (Arrow buffers)."""

    def __init__(self, workers: int, index: BenchmarkIndex, min_texts: int):
        global _WORKER_INDEX
        from .extraction import load_model
        from .rules import load_rules

        load_rules(), load_model()  # loaded once here, inherited by the workers
        self.workers, self.index, self.min_texts = workers, index, min_texts
        _WORKER_INDEX = index
        try:
            self.pool = mp.get_context("fork").Pool(workers)
        finally:
            _WORKER_INDEX = None

    def map(self, sys_u: pa.Array, user_u: pa.Array, bounds: list[tuple[int, int]]) -> list[dict]:
        jobs = [(_compact(sys_u.slice(lo, hi - lo)), _compact(user_u.slice(lo, hi - lo))) for lo, hi in bounds]
        return self.pool.map(_analyse_sent, jobs, chunksize=1)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


@contextlib.contextmanager
def signal_pool(benchmark_index: BenchmarkIndex | None = None):
    """Within the block, :func:`compute_signals` calls with the same benchmark index (default:
    :func:`default_benchmark_index`) and at least :data:`PERSISTENT_POOL_MIN_TEXTS` distinct texts are
    analysed by one set of :func:`signal_workers` processes forked on entry. Open it before the process
    grows (the scan opens it before reading). Nothing changes where fewer than two workers are allowed,
    fork is unavailable or a pool is already open; results are identical either way."""
    global _ACTIVE_POOL
    workers = signal_workers()
    if _ACTIVE_POOL is not None or workers < 2 or not _can_fork():
        yield _ACTIVE_POOL
        return
    index = benchmark_index if benchmark_index is not None else default_benchmark_index()
    pool = _PersistentPool(workers, index, PERSISTENT_POOL_MIN_TEXTS)
    _ACTIVE_POOL = pool
    try:
        yield pool
    finally:
        _ACTIVE_POOL = None
        pool.close()


def _has_tools(events: pa.Table, n: int) -> np.ndarray:
    if "n_tools" in events.column_names:
        return pc.fill_null(pc.greater(events.column("n_tools"), 0), False).to_numpy(zero_copy_only=False)
    if "tools" in events.column_names:
        t = events.column("tools")
        ok = pc.and_(pc.is_valid(t), pc.not_equal(pc.fill_null(t.cast(pa.string()), "[]"), "[]"))
        return pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
    return np.zeros(n, bool)


def _tools_given(tools) -> bool:
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            return False
    return bool(tools)


def _row(a: Analysis, i: int, tools) -> dict:
    return {
        "extraction_score": float(a.extraction_score[i]),
        "extraction_reason": a.extraction_reason[i],
        "capability": "tool_use" if _tools_given(tools) else a.capability[i],
        "benchmark": a.benchmark[i],
        "benchmark_item": a.benchmark_item[i],
        "benchmark_score": float(a.benchmark_score[i]),
        "template_id": a.template_id[i],
        "template_sig": int(a.template_sig[i]),
        "system_prompt_id": a.system_prompt_id[i],
        "text_len": int(a.text_len[i]),
    }


def score_request(system_text: str | None, user_text: str, tools: list | None = None, *,
                  benchmark_index: BenchmarkIndex | None = None) -> dict:
    """Signals of one request (same results as :func:`compute_signals`), as a dict with the
    :data:`SIGNAL_SCHEMA` signal columns."""
    if benchmark_index is None:
        benchmark_index = default_benchmark_index()
    a: Analysis = analyse([system_text], [user_text or ""], benchmark_index=benchmark_index)
    return _row(a, 0, tools)


def score_requests(items, *, benchmark_index: BenchmarkIndex | None = None) -> list[dict]:
    """:func:`score_request` for several ``(system_text, user_text, tools)`` at once (one pass; for the
    gateway's micro-batches). Same results as calling :func:`score_request` on each."""
    items = list(items)
    if benchmark_index is None:
        benchmark_index = default_benchmark_index()
    a = analyse([s or None for s, _, _ in items], [u or "" for _, u, _ in items], benchmark_index=benchmark_index)
    return [_row(a, i, tools) for i, (_, _, tools) in enumerate(items)]


from . import detectors as _detectors  # noqa: E402,F401  (built-in detectors register on import)

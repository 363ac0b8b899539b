"""Per-request signals: reasoning-extraction score, capability tag, public task-set match and prompt-template
fingerprints (docs/detectors.md, docs/architecture.md "signals").

:func:`compute_signals` works on a whole events table: it deduplicates (system, user) texts first, analyses
each distinct text once and spreads the results back to the rows. :func:`score_request` runs the same code
on one request for the real-time gateway.
"""

from __future__ import annotations

import dataclasses
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

_SEP = "\x1f"
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
    system = pc.fill_null(_column(events, "system_text", n).cast(pa.string()), _NULL_SYS)
    user = pc.fill_null(events.column("user_text").cast(pa.string()), "")
    key = pc.binary_join_element_wise(system, user, _SEP)
    enc = pc.dictionary_encode(key).combine_chunks() if n else None
    if n:
        idx = enc.indices.to_numpy(zero_copy_only=False)
        uniq = enc.dictionary.to_pylist()
    else:
        idx = np.empty(0, np.int64)
        uniq = []
    sys_u: list[str | None] = []
    user_u: list[str] = []
    for k in uniq:
        s, _, u = k.partition(_SEP)
        sys_u.append(None if s == _NULL_SYS else s)
        user_u.append(u)
    a = _analyse_pooled(sys_u, user_u, benchmark_index)
    has_tools = _has_tools(events, n)
    cap = pa.array(a.capability, pa.string()).take(pa.array(idx))
    if has_tools.any():
        cap = pc.if_else(pa.array(has_tools), "tool_use", cap)
    take = pa.array(idx, pa.int64())
    cols = {
        "event_id": events.column("event_id").cast(pa.string()),
        "request_id": _column(events, "request_id", n).cast(pa.string()),
        "account_id": events.column("account_id").cast(pa.string()),
        "timestamp": _column(events, "timestamp", n, _TS).cast(_TS),
        "extraction_score": pa.array(a.extraction_score[idx], pa.float64()),
        "extraction_reason": pa.array(a.extraction_reason, pa.string()).take(take),
        "capability": cap,
        "benchmark": pa.array(a.benchmark, pa.string()).take(take),
        "benchmark_item": pa.array(a.benchmark_item, pa.string()).take(take),
        "benchmark_score": pa.array(a.benchmark_score[idx], pa.float64()),
        "template_id": pa.array(a.template_id, pa.string()).take(take),
        "template_sig": pa.array(a.template_sig[idx], pa.int64()),
        "system_prompt_id": pa.array(a.system_prompt_id, pa.string()).take(take),
        "text_len": pa.array(a.text_len[idx], pa.int32()),
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


def _analyse_chunk(bounds: tuple[int, int]) -> Analysis:
    sys_u, user_u, index = _POOL_STATE
    lo, hi = bounds
    return analyse(sys_u[lo:hi], user_u[lo:hi], benchmark_index=index)


def _analyse_pooled(sys_u: list, user_u: list, index: BenchmarkIndex) -> Analysis:
    """:func:`analyse` over the distinct texts; large inputs are cut into contiguous chunks analysed by
    forked workers (each text's signals depend on that text alone, so the result is identical)."""
    global _POOL_STATE
    n, workers = len(user_u), signal_workers()
    if (n < POOL_MIN_TEXTS or workers < 2 or "fork" not in mp.get_all_start_methods()
            or mp.current_process().daemon):  # a pool worker may not start processes of its own
        return analyse(sys_u, user_u, benchmark_index=index)
    parts = min(workers * 2, max(2, n // 10_000))
    cuts = np.linspace(0, n, parts + 1).astype(int)
    bounds = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]
    _POOL_STATE = (sys_u, user_u, index)  # inherited by the forked workers, never pickled
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            chunks = pool.map(_analyse_chunk, bounds, chunksize=1)
    finally:
        _POOL_STATE = None
    return Analysis(*(
        np.concatenate([getattr(c, f.name) for c in chunks]) if isinstance(getattr(chunks[0], f.name), np.ndarray)
        else [x for c in chunks for x in getattr(c, f.name)]
        for f in dataclasses.fields(Analysis)))


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

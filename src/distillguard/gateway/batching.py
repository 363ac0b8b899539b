"""Adaptive micro-batching of per-request scoring.

``distillguard.signals`` scores through Arrow compute kernels whose cost is almost all fixed per call (about the
same for 1 text as for 128), so the gateway scores the requests that arrive together in one call. There is no
waiting window: while one batch is being scored (in a worker thread, so the event loop keeps proxying), new
requests queue up and form the next batch. An idle gateway scores each request at once, alone.

:func:`signals_batch` calls ``distillguard.signals.score_requests`` when that exists, else the same
``analyse`` that ``score_request`` wraps, and builds the same dict per request (a test checks they agree).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Sequence

__all__ = ["BatchScorer", "signals_batch"]

Item = tuple[str, str, Any]  # (system_text, user_text, tools)


def signals_batch(items: Sequence[Item]) -> list[dict]:
    """Signals of several requests in one call, identical to ``score_request`` on each."""
    import distillguard.signals as sig

    many = getattr(sig, "score_requests", None)
    if many is not None:
        return list(many(items))
    a = sig.analyse([s or None for s, _, _ in items], [u or "" for _, u, _ in items],
                    benchmark_index=sig.default_benchmark_index())
    out = []
    for i, (_, _, tools) in enumerate(items):
        if isinstance(tools, str):
            try:
                tools = json.loads(tools)
            except ValueError:
                tools = None
        out.append({
            "extraction_score": float(a.extraction_score[i]),
            "extraction_reason": a.extraction_reason[i],
            "capability": "tool_use" if tools else a.capability[i],
            "benchmark": a.benchmark[i],
            "benchmark_item": a.benchmark_item[i],
            "benchmark_score": float(a.benchmark_score[i]),
            "template_id": a.template_id[i],
            "template_sig": int(a.template_sig[i]),
            "system_prompt_id": a.system_prompt_id[i],
            "text_len": int(a.text_len[i]),
        })
    return out


class BatchScorer:
    """``await scorer.score(system, user, tools)``; concurrent calls are scored together by ``batch_fn``."""

    def __init__(self, batch_fn: Callable[[Sequence[Item]], list[dict]] = signals_batch, max_batch: int = 128,
                 inline_max: int | None = None):
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        #: batches up to this size are scored on the event loop itself: the signals fast path takes well under
        #: a millisecond per request and holds the GIL, so a thread hop only adds GIL hand-over delay. Default:
        #: 2 for signals_batch, 0 (always a worker thread) for any other scorer.
        self.inline_max = (2 if batch_fn is signals_batch else 0) if inline_max is None else inline_max
        self._pending: list[tuple[Item, asyncio.Future]] = []
        self._running = False
        self.batches = 0  # number of batch_fn calls (for tests and metrics)

    async def score(self, system: str, user: str, tools: Any) -> dict:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(((system, user, tools), fut))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                items = [it for it, _ in batch]
                self.batches += 1
                try:
                    if len(items) <= self.inline_max:
                        results = self.batch_fn(items)
                    else:
                        results = await asyncio.to_thread(self.batch_fn, items)
                    if len(results) != len(items):
                        raise RuntimeError(f"batch scorer returned {len(results)} results for {len(items)} requests")
                except Exception as exc:  # every waiter gets the failure (fail_mode decides)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), res in zip(batch, results):
                    if not fut.done():
                        fut.set_result(res)
        finally:
            self._running = False

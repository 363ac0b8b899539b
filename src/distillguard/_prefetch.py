"""Read ahead of a consumer: iterate a source in a background thread, a few items ahead.

Used where the consumer's work releases the GIL (DuckDB inserts), so that parsing the next batches overlaps
it. An error raised by the source is re-raised, unchanged, in the consumer's thread at the point the item
would have arrived; when the consumer stops early, the thread stops at its next item and the source's
``close`` is called.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_END = object()


def prefetch(source: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Items of ``source`` in order, with up to ``depth`` of them produced ahead (``depth <= 0``: none)."""
    if depth <= 0:
        yield from source
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        it = iter(source)
        try:
            for item in it:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer
            put((None, exc))
        finally:
            if stop.is_set():
                close = getattr(it, "close", None) or getattr(source, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:
                        pass

    thread = threading.Thread(target=run, name="distillguard-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)

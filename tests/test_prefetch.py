"""The read-ahead helper used by ingest: order, errors and early stops."""

from __future__ import annotations

import threading
import time

import pytest

from distillguard._prefetch import prefetch


def test_items_arrive_in_order_and_ahead_of_the_consumer():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    it = prefetch(source(), depth=3)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 4 and time.monotonic() < deadline:  # 1 taken + 3 queued
        time.sleep(0.01)
    assert 4 <= len(produced) <= 5  # bounded by depth (+1 held by the blocked producer)
    assert [0, *it] == list(range(50))


def test_depth_zero_runs_in_the_callers_thread():
    seen = []

    def source():
        seen.append(threading.current_thread())
        yield 1

    assert list(prefetch(source(), depth=0)) == [1]
    assert seen == [threading.current_thread()]


def test_a_source_error_is_raised_in_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("bad line 3")

    got = []
    with pytest.raises(ValueError, match="bad line 3"):
        for x in prefetch(source(), depth=4):
            got.append(x)
    assert got == [1, 2]


def test_stopping_early_closes_the_source_and_ends_the_thread():
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    it = prefetch(source(), depth=2)
    assert next(it) == 0
    it.close()
    assert closed.wait(5)
    assert not any(t.name == "distillguard-prefetch" and t.is_alive() for t in threading.enumerate())

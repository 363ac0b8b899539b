"""distillguard._alloc: the glibc malloc thresholds a scan sets, the opt-out, and the paused GC."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from distillguard._alloc import paused_gc

_PROBE = """
import ctypes, sys
from distillguard import _alloc
print(_alloc.tune_malloc(), _alloc.tune_malloc())
import pyarrow as pa
print(pa.default_memory_pool().backend_name)
"""


def _probe(env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_tune_malloc_applies_once_and_honours_the_opt_out():
    import ctypes

    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
        glibc = True
    except AttributeError:
        glibc = False
    # opted out: Arrow's own default pool stays (asked in a fresh process: this one may have scanned already)
    off = _probe({"DISTILLGUARD_MALLOC_TUNING": "0"})
    assert off[:2] == ["False", "False"] and _probe({"DISTILLGUARD_MALLOC_TUNING": "off"}) == off
    # applied: Arrow allocates from the tuned heap too
    assert _probe({"DISTILLGUARD_MALLOC_TUNING": "1"}) == [str(glibc), str(glibc), "system" if glibc else off[2]]


def test_paused_gc_restores_the_collector_even_on_error():
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with paused_gc():
            raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # was off before: stays off
    finally:
        gc.enable()


def test_scan_pauses_the_collector_only_while_it_runs(tmp_path):
    from distillguard.detect import Scanner
    from distillguard.sim import simulate

    sim = simulate(tmp_path / "sim", scenario="demo", seed=1, scale=0.05)
    seen = []
    Scanner().scan([sim.events_path], progress=lambda msg: seen.append(gc.isenabled()))
    assert seen and not any(seen)
    assert gc.isenabled()


_TRIM_PROBE = """
import numpy as np
from distillguard import _alloc
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20
before_tuning = _alloc.release_heap()
_alloc.tune_malloc()
base = rss()
blocks = [np.ones(2**20 // 8) for _ in range(400)]  # 400 MiB in heap-sized pieces (kept under the thresholds)
del blocks
held = rss()
released = _alloc.release_heap()
print(before_tuning, released, round(held - base), round(rss() - base))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only")
def test_release_heap_returns_what_the_tuned_heap_kept():
    out = subprocess.run([sys.executable, "-c", _TRIM_PROBE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DISTILLGUARD_MALLOC_TUNING": "1"})
    assert out.returncode == 0, out.stderr
    before, released, held, after = out.stdout.split()
    assert before == "False"  # nothing is trimmed where the thresholds were not applied
    assert released == "True"
    assert int(held) > 300  # the tuned heap kept the freed arrays resident ...
    assert int(after) < 50  # ... until they were handed back

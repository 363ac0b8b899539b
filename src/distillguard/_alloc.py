"""Process-level settings that make a batch scan cheaper: glibc's malloc kept from returning and re-faulting
memory, and the cyclic garbage collector paused while a scan runs.

Why: a scan builds and drops numpy arrays of several MB each, thousands of times. glibc serves them with
``mmap`` (or trims the heap right after they are freed), so every new array comes as fresh zeroed pages: on
the 1M-event benchmark the kernel spent about 5 CPU-s zeroing pages (``clear_page_erms``) and page faulting.
Raising the mmap and trim thresholds keeps that memory in the heap for the next array. Peak memory is
unchanged (measured, docs/detection.md); memory freed at the end is kept by the process rather than
returned to the system. The collector scans the millions of objects the stages create and never finds
cycles there.

Arrow's default memory pool is switched to the system allocator (so the tuned heap) at the same time.

Opt out with ``DISTILLGUARD_MALLOC_TUNING=0``. Only glibc is tuned; elsewhere :func:`tune_malloc` does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading

__all__ = ["tune_malloc", "paused_gc", "release_heap", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "TOP_PAD", "ARENA_MAX"]

#: allocations from this size up get their own mapping (glibc's default starts at 128 KiB, adapts up to 32 MiB)
MMAP_THRESHOLD = 512 * 2**20
#: free memory at the top of the heap kept before it is returned to the system
TRIM_THRESHOLD = 1024 * 2**20
#: extra bytes asked of the system each time the heap grows (untouched pages cost nothing)
TOP_PAD = 64 * 2**20
#: malloc arenas: one, so helper threads (the file reader, the sketch thread) allocate from the main heap
#: under the thresholds above; in an arena of their own every array over 64 MiB was a fresh mapping again
#: (same speed measured, about 60 MB less peak memory at 1M events)
ARENA_MAX = 1

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_lock = threading.Lock()
_state: dict = {"done": False, "applied": False}


def tune_malloc() -> bool:
    """Apply the thresholds once per process (glibc only; ``DISTILLGUARD_MALLOC_TUNING=0`` skips it).
    Returns whether they are in effect. Forked workers inherit them."""
    with _lock:
        if _state["done"]:
            return _state["applied"]
        _state["done"] = True
        if os.environ.get("DISTILLGUARD_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
            return False
        try:
            libc = ctypes.CDLL(None)
            mallopt = libc.mallopt
            libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has a mallopt that does nothing)
        except (OSError, AttributeError):
            return False
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        ok = all(mallopt(param, value) == 1 for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD),
            (_M_ARENA_MAX, ARENA_MAX)))
        if ok:
            # Arrow's buffers from the same tuned heap: its default pool (mimalloc) hands freed pages back
            # and faults them in again (1.5-2.5 CPU-s of kernel time per 1M events; peak memory also lower)
            import pyarrow as pa

            pa.set_memory_pool(pa.system_memory_pool())
        _state["applied"] = ok
        return ok


def release_heap() -> bool:
    """Hand the heap's free memory back to the system now (glibc's ``malloc_trim``), where :func:`tune_malloc`
    applied its thresholds: they keep up to :data:`TRIM_THRESHOLD` of freed memory for reuse, which a stage
    that has just dropped its large arrays should not carry into the next one as resident memory. Returns
    whether memory was released."""
    if not _state["applied"]:
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


@contextlib.contextmanager
def paused_gc():
    """The cyclic garbage collector off while the block runs (restored after, also on error)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()

"""Hand the C allocator's free pages back to the system, every MALLOC_TRIM_INTERVAL_SECONDS.

glibc keeps what a process frees for its next allocations, and gives back
only what lies at the top of a heap. A worker frees a great deal in between:
fetched record batches, request and response buffers, RocksDB's blocks. Under
`make soak` the memory in use stayed flat after the warm-up while glibc's
free-but-kept memory rose by 10 MB in the next 3 minutes (docs/performance.md,
"Soak"). `malloc_trim(0)` returns every whole free page of every arena; it runs
in a thread (ctypes releases the interpreter lock), so the event loop goes on.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from typing import Callable

from app.observability import metrics

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None under a C library without it (musl)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def trim(malloc_trim: Callable[[int], int]) -> int:
    """Trim once: the RSS it gave back, in bytes (other threads' allocations meanwhile blur it a little)."""
    before, started = rss_bytes(), time.perf_counter()
    malloc_trim(0)
    metrics.malloc_trim_duration.observe(time.perf_counter() - started)
    released = max(0, before - rss_bytes())
    metrics.malloc_trim_released.inc(released)
    return released


def trim_periodically(app, interval_seconds: float) -> bool:
    """Register a timer on `app` that trims every `interval_seconds`; False when off (0) or not glibc."""
    malloc_trim = glibc_malloc_trim()
    if not interval_seconds or malloc_trim is None:
        return False

    @app.timer(interval=interval_seconds)
    async def trim_free_memory() -> None:
        await asyncio.get_running_loop().run_in_executor(None, trim, malloc_trim)

    return True

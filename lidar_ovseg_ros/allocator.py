"""Keep a long-running node's resident memory bounded under clouds of varying sizes (glibc).

Why RSS creeps up without this: every thread that allocates (DDS receive threads, executor
threads, the worker, torch's pool) gets its own glibc malloc arena; memory freed there is kept for
reuse instead of being returned to the system, and after a large block is freed glibc raises its
mmap threshold (up to 32 MB), so later large arrays come from those arenas too and fragment them.
A stream of messages of many sizes -- hostile input, or a sensor whose cloud size varies -- then
grows RSS by hundreds of MB (issue 9.6: +70% over 10,000 malformed clouds, more on each pass).

`configure()` (once, at node start) caps the arenas (`M_ARENA_MAX`) and, only when asked
(`mmap_threshold` > 0), fixes the mmap threshold; `Trimmer.maybe_trim()` (after each cloud,
rate-limited) returns free heap pages with `malloc_trim(0)`. Neither changes any computed value.
Outside glibc, or with `LIDAR_OVSEG_MALLOC_TUNING=0` in the environment, both do nothing and
return False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time

__all__ = ["ARENA_MAX", "MMAP_THRESHOLD", "Trimmer", "configure", "enabled", "trim"]

ARENA_MAX = 2
# 0: glibc's dynamic mmap threshold is left alone. A fixed 1 MiB threshold bounded RSS a little
# better (+9% instead of +13% over 6,000 hostile clouds) but mmapped every large tensor afresh, and
# the page faults cost ~50% of the tiny nuScenes frame (280 -> 440 ms per frame in the node);
# capped arenas + the rate-limited malloc_trim(0) keep RSS bounded without that cost.
MMAP_THRESHOLD = 0
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_libc: ctypes.CDLL | None = None
_lock = threading.Lock()
_configured = False


def enabled() -> bool:
    """True when glibc's malloc is there and LIDAR_OVSEG_MALLOC_TUNING is not "0"."""
    global _libc
    if os.environ.get("LIDAR_OVSEG_MALLOC_TUNING", "1") == "0":
        return False
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.mallopt  # noqa: B018 -- glibc only
            lib.malloc_trim  # noqa: B018
        except (OSError, AttributeError):
            return False
        _libc = lib
    return True


def configure(arena_max: int = ARENA_MAX, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Cap malloc arenas (and fix the mmap threshold when > 0) for this process (idempotent)."""
    global _configured
    if not enabled():
        return False
    with _lock:
        if not _configured:
            assert _libc is not None
            _libc.mallopt(_M_ARENA_MAX, int(arena_max))
            if mmap_threshold > 0:
                _libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
                _libc.mallopt(_M_TRIM_THRESHOLD, int(mmap_threshold))
            _configured = True
    return True


def trim() -> bool:
    """Give free heap memory back to the system (`malloc_trim(0)`); True if any was released."""
    if not enabled():
        return False
    assert _libc is not None
    return bool(_libc.malloc_trim(0))


class Trimmer:
    """`trim()` at most once every `min_interval` seconds (it walks every arena: ~ms)."""

    def __init__(self, min_interval: float = 1.0) -> None:
        self.min_interval = float(min_interval)
        self.trims = 0
        self._last = float("-inf")

    def maybe_trim(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.min_interval:
            return False
        self._last = now
        self.trims += 1
        return trim()

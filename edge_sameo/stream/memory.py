"""Give the C heap's free memory back to the operating system during long runs.

Every frame allocates and frees large buffers (decoded frames, masks) from several threads.
glibc's allocator keeps such memory in per-thread arenas once its adaptive mmap threshold has
grown, and a long stream run's resident memory then creeps up (measured: +13 % in 4 minutes
of a live stream that drops frames, see docs/BENCHMARKS.md) although nothing is leaked.
``malloc_trim(0)`` hands the free pages of every arena back; it costs about a
millisecond or two, so the app calls it every :data:`TRIM_EVERY` frames. Elsewhere than on glibc
it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache
from typing import Any

#: Frames between two trims of the C heap in a stream run.
TRIM_EVERY = 64


@cache
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return free heap pages to the OS; whether the allocator could do it."""
    fn = _malloc_trim()
    return bool(fn is not None and fn(0))

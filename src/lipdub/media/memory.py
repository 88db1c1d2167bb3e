"""Keep a render's resident memory what it holds, not what it once held (glibc).

Two effects made a 4K sync's peak RSS ~100 MB larger than its live data: every thread
that allocates gets its own malloc arena (decode, encode, bank, profile threads), and
large arrays freed in the preparation stay in those arenas, fragmented. The settings below
cap the arenas at two and give arrays of 4 MB and more (4K windows and planes, audio
tracks) their own mappings, returned to the system when freed; smaller ones still come
from the heap (a fixed threshold of 128 kB costs CPU in page faults at 720p). Compare by
overriding them for a run of bench/speed.py (an operator's MALLOC_* environment wins).

The service's engine child gets them as environment variables (read by glibc at start);
the CLI sets them with mallopt before any thread starts. A program that imports lipdub as
a library keeps its own allocator settings.
"""

from __future__ import annotations

import contextlib
import ctypes

ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(4 * 1024 * 1024)}

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
_M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


def tune_allocator() -> None:
    """Apply ALLOCATOR_ENV to this process (call before starting threads)."""
    libc = _libc()
    if libc is None:
        return
    with contextlib.suppress(AttributeError):
        libc.mallopt(_M_ARENA_MAX, int(ALLOCATOR_ENV["MALLOC_ARENA_MAX"]))
        libc.mallopt(_M_MMAP_THRESHOLD, int(ALLOCATOR_ENV["MALLOC_MMAP_THRESHOLD_"]))


def trim_heap() -> None:
    """Hand memory freed by the preparation (audio, bank vetting: hundreds of MB of
    temporaries for a long video) back to the system before the long render pass."""
    libc = _libc()
    if libc is None:
        return
    with contextlib.suppress(AttributeError):
        libc.malloc_trim(0)

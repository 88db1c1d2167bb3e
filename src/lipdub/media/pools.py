"""Library thread pools off while lipdub's own threads keep the cores busy."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import cv2
from threadpoolctl import threadpool_limits


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, as a container pins it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def serial_libraries() -> Iterator[None]:
    """OpenCV and BLAS without their thread pools for the block (process-wide settings).

    Identify and sync keep the cores busy themselves (decode, search, bank, profile,
    render and encode threads, x264's own): the libraries' pools on top of them only
    spin, waiting for cores that are taken, and cost CPU for no speed (OpenCV's in a
    sync's bank warps, OpenBLAS's in its speech analysis and bank vetting)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(threads)


__all__ = ["serial_libraries", "usable_cores"]

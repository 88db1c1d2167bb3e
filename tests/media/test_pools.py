"""Library thread pools are off while identify and sync run, and restored after."""

from __future__ import annotations

import cv2
import pytest
from threadpoolctl import threadpool_info

from lipdub.media.pools import serial_libraries


def _blas_threads() -> set[int]:
    return {int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"}


def test_library_pools_are_off_inside_and_restored_after() -> None:
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        blas = _blas_threads()
        assert blas, "NumPy's BLAS is not seen: nothing here would be tested"
        with serial_libraries():
            assert cv2.getNumThreads() == 1
            assert _blas_threads() == {1}
        assert cv2.getNumThreads() == 2 and _blas_threads() == blas
        with pytest.raises(ValueError), serial_libraries():  # restored on an error too
            raise ValueError
        assert cv2.getNumThreads() == 2 and _blas_threads() == blas
    finally:
        cv2.setNumThreads(before)

"""Free-space watermark of the data directory's disk.

Below ``min_free_bytes`` the service takes no new work (503), /healthz says so, and
running tasks fail with a refund rather than writing until the disk is full (a full disk
also stops the database, and with it every account). The state is measured at most every
``CHECK_S`` seconds however often it is asked, and a change is logged once, not per poll.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger("lipdub.disk")
CHECK_S = 0.5
MB = 1024 * 1024


class DiskLow(Exception):
    """Raised where new work would need disk space the watermark keeps free."""


class DiskGuard:
    def __init__(self, path: Path, min_free_bytes: int) -> None:
        self.path = path
        self.min_free = min_free_bytes
        self._lock = threading.Lock()
        self._checked = -1e9
        self._free = 0
        self._low = False

    def free_bytes(self) -> int:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= CHECK_S:
                self._checked = now
                self._free = shutil.disk_usage(self.path).free
                low = self._free < self.min_free
                if low != self._low:
                    self._low = low
                    if low:
                        log.warning("disk low: %s; new work refused", self.message())
                    else:
                        log.warning("disk space recovered: %d MB free", self._free // MB)
            return self._free

    def low(self) -> bool:
        self.free_bytes()
        return self._low

    def message(self) -> str:
        return (
            f"The server is low on disk space ({self._free // MB} MB free, it keeps "
            f"{self.min_free // MB} MB free)"
        )

    def check(self, extra_bytes: int = 0) -> None:
        """DiskLow if free space is (or, after writing ``extra_bytes``, would be) below
        the watermark."""
        if self.low() or self._free - extra_bytes < self.min_free:
            raise DiskLow(f"{self.message()}: retry later.")

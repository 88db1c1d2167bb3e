"""Per-account admission: one account must not be able to use up what the others need.

- Request rate per account: the ``limits`` library's moving window (in this process's
  memory; every API process counts on its own).
- Downloads (and the probing that follows them) run on threads of their own, bounded per
  account and overall. Starlette's shared thread pool (40 threads) also serves /healthz,
  /metrics and /media: a few dozen trickling sources must never be able to fill it. A
  request that finds no free slot is refused at once instead of queueing, so a slot is
  never held by a request waiting behind slow ones.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from lipdub.config import Settings
from lipdub.service.api.errors import HttpError


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._rate = MovingWindowRateLimiter(MemoryStorage())
        per_s = settings.rate_limit_per_s
        self._item = RateLimitItemPerSecond(per_s) if per_s > 0 else None
        self._lock = threading.Lock()
        self._downloads: Counter[str] = Counter()
        self._total = 0
        # Tokens for the download threads; slots are counted above, so this never waits.
        self.download_threads = anyio.CapacityLimiter(max(settings.max_downloads, 1))

    def request(self, account: str) -> None:
        """Count one request of ``account``; 429 past the per-second limit."""
        if self._item is not None and not self._rate.hit(self._item, account):
            raise HttpError(
                429,
                f"Too many requests: this account may send {self._item.amount} per second; "
                "slow down and retry in a second.",
                headers={"Retry-After": "1"},
            )

    @contextmanager
    def download_slot(self, account: str) -> Iterator[None]:
        """Hold one of the account's and one of the server's download slots."""
        s = self.settings
        with self._lock:
            if self._downloads[account] >= s.max_downloads_per_account:
                raise HttpError(
                    429,
                    f"Too many downloads at once: this account may have "
                    f"{s.max_downloads_per_account} inputs downloading; retry when one ends.",
                    headers={"Retry-After": "5"},
                    reason="concurrency",
                )
            if self._total >= s.max_downloads:
                raise HttpError(
                    503,
                    f"The server is downloading {s.max_downloads} inputs already: retry in a "
                    "few seconds.",
                    headers={"Retry-After": "5"},
                )
            self._downloads[account] += 1
            self._total += 1
        try:
            yield
        finally:
            with self._lock:
                self._downloads[account] -= 1
                if self._downloads[account] <= 0:
                    del self._downloads[account]
                self._total -= 1

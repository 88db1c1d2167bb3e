"""Per-account admission: one account must not be able to use up what the others need.

- Request rate per account: a moving window (at most ``rate_limit_per_s`` in any
  second), counted where every API process sees it (shared_limits.py: the database, or
  Redis when ``LIPDUB_REDIS_URL`` is set). Issue 23: counted in each process's memory,
  two processes let twice the limit through.
- Downloads (and the probing that follows them) run on threads of their own, bounded per
  account and overall, over every API process. Starlette's shared thread pool (40
  threads) also serves /healthz, /metrics and /media: a few dozen trickling sources must
  never be able to fill it. A request that finds no free slot is refused at once instead
  of queueing, so a slot is never held by a request waiting behind slow ones. Slots are
  leased and renewed while their download runs, so a process that dies frees its slots
  after ``download_slot_lease_s``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi.concurrency import run_in_threadpool

from lipdub.config import Settings
from lipdub.service.api.errors import HttpError
from lipdub.service.api.shared_limits import LimitsUnavailable, SharedLimits
from lipdub.service.retry import BurstLog
from lipdub.service.store import DownloadSlotsFull

log = logging.getLogger("lipdub.admission")


class Admission:
    def __init__(self, settings: Settings, limits: SharedLimits) -> None:
        self.settings = settings
        self.limits = limits
        self.lease_ms = int(settings.download_slot_lease_s * 1000)
        # Tokens for this process's download threads; slots are counted in the shared
        # store (at most max_downloads over all processes), so this never waits.
        self.download_threads = anyio.CapacityLimiter(max(settings.max_downloads, 1))
        self._held: dict[str, str] = {}  # slot id -> account, downloads running here
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._outage = BurstLog(log, "rate-limit store (Redis)")

    async def request(self, account: str) -> None:
        """Count one request of ``account``; 429 past the per-second limit."""
        per_s = self.settings.rate_limit_per_s
        if per_s <= 0:
            return
        try:
            allowed = await run_in_threadpool(self.limits.hit, account, per_s)
        except LimitsUnavailable as e:
            raise self._unavailable(e) from None
        self._outage.ok()
        if not allowed:
            raise HttpError(
                429,
                f"Too many requests: this account may send {per_s} per second; "
                "slow down and retry in a second.",
                headers={"Retry-After": "1"},
            )

    @asynccontextmanager
    async def download_slot(self, account: str) -> AsyncIterator[None]:
        """Hold one of the account's and one of the server's download slots."""
        s = self.settings
        try:
            slot = await run_in_threadpool(
                self.limits.take_slot,
                account,
                s.max_downloads_per_account,
                s.max_downloads,
                self.lease_ms,
            )
        except LimitsUnavailable as e:
            raise self._unavailable(e) from None
        except DownloadSlotsFull as e:
            if e.scope == "account":
                raise HttpError(
                    429,
                    f"Too many downloads at once: this account may have "
                    f"{s.max_downloads_per_account} inputs downloading; retry when one ends.",
                    headers={"Retry-After": "5"},
                    reason="concurrency",
                ) from None
            raise HttpError(
                503,
                f"The server is downloading {s.max_downloads} inputs already: retry in a "
                "few seconds.",
                headers={"Retry-After": "5"},
            ) from None
        self._hold(slot, account)
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(slot, None)
            try:
                # Shielded: a request cancelled mid-download still gives its slot back
                # now, not a lease later.
                with anyio.CancelScope(shield=True):
                    await run_in_threadpool(self.limits.release_slot, slot, account)
            except Exception as e:  # the lease runs out on its own: the slot is not lost
                log.warning("download slot %s not released (%s): free when its lease ends",
                            slot, type(e).__name__)

    def _hold(self, slot: str, account: str) -> None:
        with self._lock:
            self._held[slot] = account
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_loop, name="download-slots", daemon=True
                )
                self._renewer.start()

    def _renew_loop(self) -> None:
        """Renew the leases of this process's running downloads every third of a lease."""
        while not self._stop.wait(self.settings.download_slot_lease_s / 3):
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                self.limits.renew_slots(held, self.lease_ms)
            except Exception as e:  # the next round tries again, well within the lease
                log.warning("download slots not renewed (%s): retrying", type(e).__name__)

    def _unavailable(self, e: LimitsUnavailable) -> HttpError:
        self._outage.failed(e)  # one line per outage, not one per request
        return HttpError(
            503,
            "The rate-limit store (Redis) is unreachable: retry in a few seconds.",
            headers={"Retry-After": "5"},
        )

    def close(self) -> None:
        self._stop.set()
        self.limits.close()

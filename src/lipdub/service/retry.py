"""Living with faults: retry what a transient error interrupted, log an outage once.

A database that restarts, a connection an operator or a proxy cuts, a statement timeout:
each raises at one statement and is gone a moment later. Work that is already done
(a finished render) or money that must move (a settle, a refund) is retried with
back-off until ``deadline_s`` instead of being thrown away. Only operations that are
safe to repeat are retried: every caller either is idempotent by construction (the
fenced completion, keyed by task id) or re-checks what the interrupted attempt did.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from lipdub.service.storage import StorageUnavailable

T = TypeVar("T")
log = logging.getLogger("lipdub.faults")


def is_transient(e: BaseException) -> bool:
    """An error that says nothing about the data, only that the database (or the path to
    it, or the storage service) was unavailable for a moment."""
    # psycopg's own errors reach us from the LISTEN connection, which is not SQLAlchemy's.
    if isinstance(
        e, OperationalError | InterfaceError | StorageUnavailable | psycopg.OperationalError
    ):
        return True
    return isinstance(e, DBAPIError) and bool(e.connection_invalidated)


def retry_transient(
    fn: Callable[[], T],
    what: str,
    deadline_s: float,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """``fn()``, repeated after transient errors with exponential back-off (50 ms doubling
    to 2 s) until it succeeds or ``deadline_s`` passes; then the last error is raised.
    ``before_retry`` runs before each repetition (e.g. to learn whether the interrupted
    attempt committed after all). One warning per outage, not one per try."""
    start = time.monotonic()
    delay = 0.05
    tries = 0
    while True:
        try:
            result = fn()
        except Exception as e:
            if not is_transient(e) or time.monotonic() - start + delay > deadline_s:
                if tries:
                    log.error("%s: gave up after %d tries: %s", what, tries + 1, _short(e))
                raise
            if tries == 0:
                log.warning("%s: %s; retrying for up to %g s", what, _short(e), deadline_s)
            tries += 1
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            if before_retry is not None:
                before_retry()
            continue
        if tries:
            log.warning("%s: succeeded after %d tries", what, tries + 1)
        return result


def _short(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:200]}"


class BurstLog:
    """One line when a recurring operation starts failing, one when it recovers.

    A worker polls several times a second; during an outage a traceback per poll buried
    the log (~320 per worker in 40 s). Unexpected (non-transient) errors still log their
    traceback, once per burst."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self._lock = threading.Lock()
        self._failures = 0
        self._since = 0.0

    def failed(self, e: BaseException) -> None:
        with self._lock:
            self._failures += 1
            if self._failures > 1:
                return
            self._since = time.monotonic()
        if is_transient(e):
            self.logger.warning("%s failing: %s (logged once until it recovers)", self.what,
                                _short(e))
        else:
            self.logger.error("%s failing (logged once until it recovers)", self.what,
                              exc_info=e)

    def ok(self) -> None:
        if not self._failures:  # the common case, without the lock
            return
        with self._lock:
            n, self._failures = self._failures, 0
            took = time.monotonic() - self._since
        self.logger.warning("%s recovered after %d failures in %.1f s", self.what, n, took)

    @property
    def failures(self) -> int:
        return self._failures


class ThrottledLog:
    """At most one line per ``interval_s`` for a recurring condition that has no natural
    "recovered" moment (the API answering 503 while the database is away): the line says
    how many occurrences it stands for."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last = -1e9
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval_s:
                self._suppressed += 1
                return
            self._last, n, self._suppressed = now, self._suppressed, 0
        suffix = f" (and {n} more like it in the last {self.interval_s:g} s)" if n else ""
        self.logger.warning(msg + suffix, *args)

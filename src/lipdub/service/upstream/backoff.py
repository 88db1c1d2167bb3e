"""Retrying what Kling says is worth retrying (its outages, its rate and concurrency
refusals, no answer at all) with growing, jittered pauses, until a deadline."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from lipdub.service.upstream.failures import retryable
from lipdub.service.upstream.kling import KlingError

T = TypeVar("T")
log = logging.getLogger("lipdub.upstream")


class GaveUp(Exception):
    """A retryable error outlasted the deadline (``error`` the last one)."""

    def __init__(self, error: KlingError, waited_s: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.waited_s = waited_s


class Cancelled(Exception):
    """The task's cancel event was set while waiting."""


def with_backoff(
    fn: Callable[[], T],
    what: str,
    cancel: threading.Event,
    retry_s: float,
    first_s: float = 1.0,
    max_s: float = 60.0,
    waiting: Callable[[], None] | None = None,
) -> T:
    """``fn()``, retried on retryable Kling errors for up to ``retry_s``; other errors
    pass through, and so does ``Cancelled`` when ``cancel`` is set during a pause.
    ``waiting`` is called before each pause (the engine shows it is alive)."""
    started = time.monotonic()
    pause = first_s
    while True:
        try:
            return fn()
        except KlingError as e:
            if not retryable(e):
                raise
            waited = time.monotonic() - started
            if waited + pause > retry_s:
                raise GaveUp(e, waited) from None
            log.warning("%s: %s; retrying in %.1f s", what, e, pause)
            if waiting is not None:
                waiting()
            # Full jitter keeps many workers from hammering Kling in step after an outage.
            if cancel.wait(pause * (0.5 + random.random() / 2)):
                raise Cancelled() from None
            pause = min(pause * 2, max_s)

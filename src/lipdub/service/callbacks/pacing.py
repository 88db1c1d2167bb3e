"""Which callback attempts may start now: per-receiver slots shared fairly between
accounts, and back-off for endpoints that do not answer.

Issue 23: ten callbacks of account X to an endpoint that hangs, behind the same host as
account Y's receiver (a webhook gateway, a shared ingress), took the host's slots for a
whole timeout each, and Y's callback waited 49-52 s. Three rules now:

- A destination (scheme://host:port) has ``callback_per_host`` slots, the receiver's
  protection; one account holds at most ``callback_per_account_host`` of them, so with
  the defaults (2 and 1) another account always finds a slot free.
- An endpoint (a callback URL) whose attempt timed out or whose connection was refused
  is *backed off*: it waits ``callback_endpoint_backoff_s`` x 2^(n-1) after its n-th
  such failure in a row (up to ``callback_endpoint_backoff_max_s``, both scaled by
  ``callback_time_scale``), and then sends one attempt at a time outside the
  destination's slots (a probe). So an endpoint that keeps timing out holds one
  connection and no slot another account needs; its first answer (any HTTP status)
  ends the back-off. Probes take at most half of ``callback_senders``, so endpoints
  that answer always find a sender, however many endpoints hang.
- None of this changes a delivery's own schedule (``sender.next_attempt_ms``): it only
  decides which due attempt starts when, and an attempt never starts before it is due.

The bookkeeping is this process's: every dispatcher (API and worker processes) paces
its own attempts; the outbox's leases keep two from sending the same attempt.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from lipdub.config import Settings
from lipdub.service.store import DeliveryGate

K = TypeVar("K")


class Lane(Enum):
    REGULAR = "regular"  # a slot of the destination, within the account's share
    PROBE = "probe"  # the one attempt of a backed-off endpoint


@dataclass(frozen=True)
class Attempt:
    """One attempt in flight: what it holds, so finishing it gives exactly that back."""

    dest: str
    account: str
    url: str
    lane: Lane


@dataclass
class _Backoff:
    failures: int  # timeouts or refused connections in a row
    until: float  # monotonic time before which no attempt starts
    probing: bool = False


class Pacing:
    def __init__(self, settings: Settings, senders: int | None = None) -> None:
        s = settings
        self.senders = senders or s.callback_senders
        self.per_host = s.callback_per_host
        self.per_account = s.callback_per_account_host
        self.backoff_s = s.callback_endpoint_backoff_s * s.callback_time_scale
        self.backoff_max_s = s.callback_endpoint_backoff_max_s * s.callback_time_scale
        # An endpoint not tried for this long has no deliveries left (they gave up): forget
        # it, so the gate's lists stay as short as the endpoints that matter.
        self.forget_s = s.callback_give_up_s * s.callback_time_scale + self.backoff_max_s
        self._lock = threading.Lock()
        self._dests: Counter[str] = Counter()
        self._shares: Counter[tuple[str, str]] = Counter()
        self._backoff: dict[str, _Backoff] = {}
        self._in_flight = 0
        self._probes = 0
        self.max_probes = max(1, self.senders // 2)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def has_room(self) -> bool:
        return self._in_flight < self.senders

    def gate(self) -> DeliveryGate:
        """What may start now, for the outbox's claim."""
        now = time.monotonic()
        with self._lock:
            for url in [u for u, b in self._backoff.items() if now - b.until > self.forget_s]:
                del self._backoff[url]
            return DeliveryGate(
                full_dests=frozenset(d for d, n in self._dests.items() if n >= self.per_host),
                full_shares=frozenset(k for k, n in self._shares.items() if n >= self.per_account),
                backed_off=frozenset(self._backoff),
                probe_ready=frozenset(
                    u
                    for u, b in self._backoff.items()
                    if b.until <= now and not b.probing and self._probes < self.max_probes
                ),
            )

    def begin(self, dest: str, account: str, url: str) -> Attempt:
        """Take what a claimed delivery's attempt holds (the lane the gate let it in by)."""
        with self._lock:
            b = self._backoff.get(url)
            if b is not None:
                b.probing = True
                self._probes += 1
                attempt = Attempt(dest, account, url, Lane.PROBE)
            else:
                attempt = Attempt(dest, account, url, Lane.REGULAR)
                self._dests[dest] += 1
                self._shares[(dest, account)] += 1
            self._in_flight += 1
            return attempt

    def end(self, attempt: Attempt, unreachable: bool) -> None:
        """Give back what ``attempt`` held; an unreachable endpoint backs off (longer each
        time in a row), one that answered is paced normally again."""
        with self._lock:
            self._in_flight -= 1
            if attempt.lane is Lane.REGULAR:
                _decrement(self._dests, attempt.dest)
                _decrement(self._shares, (attempt.dest, attempt.account))
            b = self._backoff.get(attempt.url)
            if attempt.lane is Lane.PROBE:
                self._probes -= 1
                if b is not None:
                    b.probing = False
            if not unreachable:
                self._backoff.pop(attempt.url, None)
                return
            failures = (b.failures if b is not None else 0) + 1
            wait = min(self.backoff_s * 2 ** min(failures - 1, 30), self.backoff_max_s)
            self._backoff[attempt.url] = _Backoff(failures, time.monotonic() + wait)

    def backed_off(self) -> dict[str, int]:
        """Endpoints in back-off and their failures in a row (for logs and tests)."""
        with self._lock:
            return {u: b.failures for u, b in self._backoff.items()}


def _decrement(counter: Counter[K], key: K) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]

"""Callback delivery from the outbox: at once, quick retries, then background re-sends.

Deliveries are rows written in the same transaction that ends a task, so a crash between
"task done" and "callback sent" loses nothing: whichever process runs a dispatcher next
picks the row up. Each attempt is claimed with a short lease so two dispatchers (API and
worker machines) never send the same attempt twice at once.

Schedule (every delay multiplied by ``callback_time_scale``, 1.0 = real time): attempt 1
at once; after failure n (n <= 3) wait 1 s, 2 s, 4 s; after that re-send at the offsets
1, 2, 5, 10, 20, 30 min from the first attempt; past the last offset, give up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
from typing import Protocol

import httpx

from lipdub.config import Settings
from lipdub.errors import LipdubError
from lipdub.media.fetch import AddressNotAllowed, FetchError, TimedOut, UrlPolicy, open_url, origin
from lipdub.service.callbacks.pacing import Attempt, Pacing
from lipdub.service.retry import BurstLog
from lipdub.service.store import Row, Store
from lipdub.service.store.db import now_ms

log = logging.getLogger("lipdub.callbacks")


class Context(Protocol):
    """What the sender reads of ``lipdub.service.context.Context`` (which sits above
    this package and is passed in whole)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def policy(self) -> UrlPolicy: ...


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """Standard Webhooks signature: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    key = secret.removeprefix("whsec_")
    try:
        key_bytes = base64.b64decode(key, validate=True)
    except ValueError:
        key_bytes = key.encode()
    mac = hmac.new(key_bytes, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def next_attempt_ms(ctx: Context, attempts_done: int, first_ms: int, now: int) -> int | None:
    """When to try again after ``attempts_done`` failed attempts, or None to give up."""
    s = ctx.settings
    scale = s.callback_time_scale
    quick = s.callback_retry_delays_s
    if attempts_done <= len(quick):
        return now + int(quick[attempts_done - 1] * scale * 1000)
    elapsed = now - first_ms
    if elapsed >= s.callback_give_up_s * scale * 1000:
        return None
    for off in s.callback_resend_offsets_s:
        at = first_ms + int(off * scale * 1000)
        if at > now:
            return at
    return None


class CallbackDispatcher:
    """Claims due deliveries and sends each attempt on a thread of its own.

    At most ``callback_senders`` attempts are in flight; which may start is decided by
    ``Pacing`` (pacing.py): a destination's slots shared between accounts, and an endpoint
    that timed out or refused the connection backed off onto one probe at a time. So a
    receiver that hangs never holds the slots that other accounts' callbacks need, even
    behind the same host. These limits only decide when an attempt starts: the retry
    schedule of each delivery (``next_attempt_ms``) is unchanged.
    """

    def __init__(self, ctx: Context, senders: int | None = None) -> None:
        self.ctx = ctx
        self.pacing = Pacing(ctx.settings, senders)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors = BurstLog(log, "callback dispatcher")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="callbacks", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        # Attempts in flight finish on their own (each is bounded by the callback timeout);
        # give them a moment to record their outcome, then leave their leases to lapse.
        deadline = time.monotonic() + timeout
        while self.pacing.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)

    def _poll_interval(self) -> float:
        # Fine-grained enough for the time-scaled tests, cheap: one indexed read.
        return min(0.25, max(0.01, self.ctx.settings.callback_time_scale * 0.25))

    def _loop(self) -> None:
        store = self.ctx.store
        lease_ms = int((self.ctx.settings.callback_timeout_s + 10) * 1000)
        while not self._stop.is_set():
            try:
                row = None
                if self.pacing.has_room():
                    gate = self.pacing.gate()
                    if store.delivery_due(gate):
                        row = store.claim_delivery(lease_ms, gate)
                self._errors.ok()
                if row is None:
                    self._wake.wait(self._poll_interval())
                    self._wake.clear()
                    continue
                url = str(row["url"])
                dest = str(row["dest"] or origin(url))
                attempt = self.pacing.begin(dest, str(row["account"]), url)
                threading.Thread(
                    target=self._send, args=(row, attempt), name="callback-send", daemon=True
                ).start()
            except Exception as e:  # keep dispatching; a claimed row's lease expires and retries
                self._errors.failed(e)
                time.sleep(0.5)

    def _send(self, row: Row, attempt: Attempt) -> None:
        unreachable = False
        try:
            unreachable = self.deliver(row)
        except Exception:
            log.exception("callback %s: delivery error", row["id"])
        finally:
            self.pacing.end(attempt, unreachable)
            self._wake.set()

    def deliver(self, r: Row) -> bool:
        """One attempt; records its outcome. True if the receiver was unreachable (timed
        out or refused the connection), which backs its endpoint off (pacing.py)."""
        msg_id, body, url = str(r["id"]), str(r["body"]), str(r["url"])
        attempts_before = int(r["attempts"])
        secret = self.ctx.store.webhook_secret(str(r["account"]))
        headers = {"Content-Type": "application/json"}
        if secret:
            ts = int(time.time())
            headers["webhook-id"] = msg_id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = sign(secret, msg_id, ts, body)
        started = now_ms()
        timeout_s = self.ctx.settings.callback_timeout_s
        status: int | None = None
        error: str | None = None
        permanent = False
        try:
            with open_url(
                url,
                self.ctx.policy,
                field="callback_url",
                timeout_s=timeout_s,
                max_redirects=0,
                method="POST",
                headers=headers,
                content=body.encode(),
            ) as resp:
                status = resp.status_code
                # Read a small answer so the connection closes cleanly; ignore big ones.
                if int(resp.headers.get("content-length") or 0) < 65536:
                    resp.read()
        except TimedOut:
            error = f"the receiver did not answer within {timeout_s:g} s"
        except FetchError as e:
            error, status = str(e), e.status
            permanent = isinstance(e, AddressNotAllowed)
        except LipdubError as e:
            error = str(e)
        except httpx.HTTPError as e:  # while reading the answer
            error = f"the receiver's answer broke off ({type(e).__name__})"
        ok = status is not None and 200 <= status < 300
        if not ok and error is None:
            error = f"the receiver answered HTTP {status}: callbacks need a 2xx answer"
        first_ms = int(r["first_ms"]) if r["first_ms"] is not None else started
        nxt = None
        if not (ok or permanent):
            nxt = next_attempt_ms(self.ctx, attempts_before + 1, first_ms, now_ms())
        self.ctx.store.record_delivery(
            msg_id,
            ok=ok,
            status=status,
            error=None if ok else error,
            attempt_ms=started,
            next_ms=nxt,
        )
        log.info("callback %s attempt %d: %s", msg_id, attempts_before + 1, "ok" if ok else error)
        return status is None and not permanent

"""Kling's error codes, as lipdub's failCodes and failMsgs (docs/kling-engine.md has the
table). Each message says what happened and who can fix it; every one of these failures
is refunded by the worker, like any failed task."""

from __future__ import annotations

from dataclasses import dataclass

from lipdub.service.upstream.kling import KlingError, KlingUnreachable

# Worth waiting for: Kling's outages (5000-5002) and its rate (1302) and concurrency
# (1303) refusals. Everything else says the request itself will not work.
RETRYABLE_CODES = frozenset({1302, 1303, 5000, 5001, 5002})


@dataclass(frozen=True)
class Failure:
    code: str
    message: str


def retryable(e: KlingError) -> bool:
    if isinstance(e, KlingUnreachable):
        return True
    if e.code in RETRYABLE_CODES:
        return True
    # No envelope: a proxy or load balancer in front of Kling that is down or busy.
    return e.code is None and (e.status >= 500 or e.status == 429)


def _said(e: KlingError) -> str:
    if isinstance(e, KlingUnreachable):
        return f"no answer: {e.message}"
    what = f"Kling code {e.code}" if e.code is not None else f"HTTP {e.status}"
    return f"{what}: {e.message}" if e.message else what


def failure_for(e: KlingError, waited_s: float | None = None) -> Failure:
    """The failCode and failMsg of a task that ends on this error (``waited_s``: how long
    a retryable error was retried before giving up)."""
    said = _said(e)
    code = e.code
    if waited_s is not None and retryable(e):
        if code in (1302, 1303):
            return Failure(
                "upstream_busy",
                f"Kling kept refusing new work for rate or concurrency ({said}) for "
                f"{waited_s:.0f} s; the task was refunded: resubmit it later.",
            )
        return Failure(
            "upstream_unavailable",
            f"Kling was unavailable for {waited_s:.0f} s ({said}); the task was refunded: "
            "resubmit it later.",
        )
    if code is not None and 1000 <= code <= 1004:
        return Failure(
            "upstream_auth",
            f"Kling refused this service's credentials ({said}); the task was refunded. "
            "The operator must check LIPDUB_KLING_ACCESS_KEY / LIPDUB_KLING_SECRET_KEY (or "
            "LIPDUB_KLING_API_KEY) and the server's clock.",
        )
    if code in (1100, 1101, 1102):
        return Failure(
            "upstream_account",
            f"This service's Kling account cannot take tasks now ({said}: account, arrears "
            "or credits used up); the task was refunded. The operator must settle the Kling "
            "account.",
        )
    if code in (1103, 1304):
        return Failure(
            "upstream_forbidden",
            f"Kling does not let this service use advanced lip-sync ({said}); the task was "
            "refunded. The operator must enable it (or this server's IP) at Kling.",
        )
    if code in (1200, 1201):
        return Failure(
            "upstream_invalid_input",
            f"Kling refused the request ({said}); the task was refunded: change the input "
            "as the message says.",
        )
    if code in (1202, 1203):
        return Failure(
            "upstream_not_found",
            f"Kling no longer knows this session or task ({said}); the task was refunded: "
            "identify the video again.",
        )
    if code in (1300, 1301):
        return Failure(
            "content_policy",
            f"Kling's content policy refused this video or audio ({said}); the task was "
            "refunded.",
        )
    return Failure(
        "upstream_error",
        f"Kling failed the request ({said}); the task was refunded: resubmit it, and "
        "report it if it repeats.",
    )


def task_failure(status_msg: str | None) -> Failure:
    """A task Kling accepted and then reported as failed."""
    why = (status_msg or "").strip() or "no reason given"
    return Failure(
        "upstream_failed",
        f"Kling could not lip-sync this video ({why}); the task was refunded.",
    )

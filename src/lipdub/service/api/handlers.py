"""Every error as an envelope: the service's own, validation failures (400, never
FastAPI's 422), unknown routes, outages (503 with Retry-After, one log line per 10 s)
and crashes (500 with a reference to find the traceback by). Under Kling's own API
(``/v1``) the same errors answer in Kling's envelope with Kling's codes (``kling.codes``)."""

from __future__ import annotations

import errno
import logging
import uuid
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lipdub.service.api import schemas
from lipdub.service.api.envelope import PREFIX, envelope
from lipdub.service.api.errors import HttpError, disk_low, unknown_fields, validation_message
from lipdub.service.api.kling import codes as kling
from lipdub.service.api.kling.schemas import BODY_OF_PATH
from lipdub.service.context import Context
from lipdub.service.ops.disk import DiskLow
from lipdub.service.retry import ThrottledLog, is_transient
from lipdub.service.storage import StorageUnavailable

log = logging.getLogger("lipdub.api")


def answer(
    r: Request,
    status: int,
    msg: str,
    data: Any = None,
    headers: dict[str, str] | None = None,
    reason: str | None = None,
) -> JSONResponse:
    """The error in the envelope of the API the request was made to."""
    if kling.is_kling_path(r.url.path):
        return kling.error_response(kling.from_status(status, msg, reason, headers))
    return envelope(status, msg, data, headers)


def install(app: FastAPI, ctx: Context) -> None:
    outage_log = ThrottledLog(log)  # an outage: a line per 10 s, not one per request

    @app.exception_handler(HttpError)
    async def _api_error(r: Request, e: HttpError) -> JSONResponse:
        return answer(r, e.status, e.message, e.data, e.headers, e.reason)

    @app.exception_handler(kling.KlingError)
    async def _kling_error(_r: Request, e: kling.KlingError) -> JSONResponse:
        return kling.error_response(e)

    @app.exception_handler(DiskLow)
    async def _disk_low(r: Request, e: DiskLow) -> JSONResponse:
        err = disk_low(e)
        return answer(r, err.status, err.message, None, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(r: Request, e: RequestValidationError) -> JSONResponse:
        ctype = r.headers.get("content-type", "")
        errs = e.errors()
        body_shape = errs and errs[0].get("type") in ("model_attributes_type", "dict_type")
        if r.method == "POST" and body_shape and "json" not in ctype and "multipart" not in ctype:
            return answer(
                r,
                400,
                f"The body was sent as {ctype or 'no content type'!r}: send JSON with the "
                "header 'Content-Type: application/json'.",
            )
        # A misspelt field also makes "missing" errors (sesion_id): the name the client
        # wrote is what to report, so unknown fields come first.
        root = BODY_OF_PATH.get(r.url.path)
        if r.url.path == f"{PREFIX}/audio/generations/cancel":
            root = schemas.CancelRequest
        unknown = unknown_fields(errs, root)
        if unknown is not None:
            return answer(r, 400, unknown[0], unknown[1])
        return answer(r, 400, validation_message(errs))

    @app.exception_handler(StarletteHTTPException)
    async def _http(r: Request, e: StarletteHTTPException) -> JSONResponse:
        if kling.is_kling_path(r.url.path) and e.status_code in (404, 405):
            return kling.error_response(
                kling.KlingError(
                    404, kling.NO_METHOD,
                    f"No {r.method} {r.url.path} in Kling's API: see docs/kling.md.",
                )
            )
        if e.status_code == 404:
            return envelope(404, "No such endpoint: see /docs for the API.")
        if e.status_code == 405:
            return envelope(405, "Method not allowed on this endpoint: see /docs.")
        return answer(r, e.status_code, str(e.detail))

    # Registered for these classes, not caught in _crash: a handler of Exception itself
    # runs in Starlette's outermost middleware, which re-raises after answering (a
    # traceback in the log per request during an outage).
    @app.exception_handler(DBAPIError)
    @app.exception_handler(psycopg.Error)
    @app.exception_handler(StorageUnavailable)
    async def _unavailable(r: Request, e: Exception) -> JSONResponse:
        if not is_transient(e):
            return await _crash(r, e)
        # Database or storage unreachable for a moment: the client's retry will do,
        # nothing is broken. One line per 10 s, no traceback.
        what = "media storage" if isinstance(e, StorageUnavailable) else "database"
        outage_log.warning("%s unreachable: %s", what, type(e).__name__)
        return answer(
            r,
            503, f"The {what} is unreachable: retry in a few seconds.",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _crash(_r: Request, e: Exception) -> JSONResponse:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            # The watermark is crossed between two of its checks: still no traceback.
            return await _disk_low(_r, DiskLow(f"{ctx.disk.message()}: retry later."))
        ref = uuid.uuid4().hex[:12]
        log.exception("internal error %s", ref)
        return answer(
            _r,
            500, f"Internal error (reference {ref}): retry, and report the reference if it repeats."
        )

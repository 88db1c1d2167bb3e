"""Kling's envelope ``{code, message, request_id, data}`` (code 0 is success; errors carry
no ``data``) and its error codes, with the HTTP status Kling sends each with.

The service's own refusals are ``HttpError`` with the reseller contract's statuses; under
``/v1`` the error handlers answer them through ``from_status`` so both APIs share every
check and each speaks its own codes. docs/kling.md maps every code.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.responses import JSONResponse

PREFIX = "/v1"

# Kling's codes used here, with the HTTP status Kling pairs each with.
AUTH_FAILED = 1000  # 401: credentials not recognised (unknown key, wrong signature)
AUTH_EMPTY = 1001  # 401: no Authorization header
AUTH_INVALID = 1002  # 401: not a Bearer token, or a token that cannot be read
AUTH_NOT_YET_VALID = 1003  # 401: nbf in the future
AUTH_EXPIRED = 1004  # 401: exp in the past
NO_CREDITS = 1102  # 429: the balance cannot pay (the contract's 402)
BAD_REQUEST = 1200  # 400: a body that is not a JSON object
BAD_PARAMETER = 1201  # 400: a field missing, unknown or out of range
NO_METHOD = 1202  # 404: no such endpoint or method
NO_RESOURCE = 1203  # 404: no such task (or another account's)
RATE = 1302  # 429: requests per second over the account's limit
CONCURRENCY = 1303  # 429: too many tasks (or downloads) at once for the account
INTERNAL = 5000  # 500
UNAVAILABLE = 5001  # 503: database, storage or disk space unavailable for a moment
TIMEOUT = 5002  # 504: identify-face did not finish within its deadline


class KlingError(Exception):
    """An answer of Kling's API other than success."""

    def __init__(
        self, status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def is_kling_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def from_status(
    status: int,
    message: str,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> KlingError:
    """The Kling error for one of the service's refusals (a contract status); headers
    such as Retry-After are kept."""
    if status == 402:
        http, code = 429, NO_CREDITS
    elif status == 429:
        http, code = 429, CONCURRENCY if reason == "concurrency" else RATE
    elif status == 401:
        http, code = 401, AUTH_FAILED
    elif status == 404:
        http, code = 404, NO_RESOURCE
    elif status in (405, 501):
        http, code = 404, NO_METHOD
    elif 400 <= status < 500:
        http, code = 400, BAD_PARAMETER
    elif status == 503:
        http, code = 503, UNAVAILABLE
    elif status == 504:
        http, code = 504, TIMEOUT
    else:
        http, code = 500, INTERNAL
    return KlingError(http, code, message, headers)


def request_id() -> str:
    return uuid.uuid4().hex


def ok(data: Any) -> JSONResponse:
    return JSONResponse({"code": 0, "message": "SUCCEED", "request_id": request_id(), "data": data})


def error_response(e: KlingError) -> JSONResponse:
    return JSONResponse(
        {"code": e.code, "message": e.message, "request_id": request_id()},
        status_code=e.status,
        headers=e.headers,
    )

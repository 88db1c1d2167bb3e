"""The contract's ``{code, msg, data}`` envelope, in which every answer goes (errors
too, with the HTTP status repeated in ``code``), and the path prefix of its endpoints."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

PREFIX = "/api/v1"


def envelope(
    code: int, msg: str, data: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg, "data": data}, status_code=code, headers=headers)


def ok(data: Any) -> JSONResponse:
    return envelope(200, "success", data)

"""The errors routes raise (answered as envelopes by ``handlers``), the ones several
routes share, and the one-sentence messages made from validation failures.

``HttpError`` is named apart from ``lipdub.client.ApiError``, which is what a client sees
of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lipdub.service.ops.disk import DiskLow

MODELS_TEXT = "'kling-identify-face' or 'kling-advanced-lip-sync'"


class HttpError(Exception):
    """An answer other than 200: its status, one sentence, optional data and headers."""

    def __init__(
        self, status: int, message: str, data: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data
        self.headers = headers


def insufficient(needed: int, balance: int, what: str = "this task costs") -> HttpError:
    return HttpError(
        402,
        f"Insufficient balance: {what} ${needed / 1e6:.4f} and the balance is "
        f"${balance / 1e6:.4f}; add credits and retry.",
        {"needed_micros": needed, "balance_micros": balance},
    )


def disk_low(e: DiskLow) -> HttpError:
    return HttpError(503, str(e), headers={"Retry-After": "60"})


def _where(loc: Sequence[Any]) -> str:
    parts: list[str] = []
    for p in loc:
        if p in ("body", "query") and not parts:
            continue
        if p in ("kling-identify-face", "kling-advanced-lip-sync"):
            continue  # the discriminated union's branch, not a field the client wrote
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts) or "body"


def validation_message(errors: Sequence[Any]) -> str:
    """One sentence for the first problem (the client fixes one thing at a time anyway)."""
    if not errors:
        return "The request is invalid: see /docs for the expected body."
    e = errors[0]
    kind = e.get("type", "")
    where = _where(e.get("loc", ()))
    if kind == "json_invalid":
        return "The request body is not valid JSON: send a JSON object."
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        got = (e.get("ctx") or {}).get("tag")
        if kind == "union_tag_not_found" or got is None:
            return f"Field 'model' is missing: set it to {MODELS_TEXT}."
        return f"Unknown model {got!r}: use {MODELS_TEXT}."
    if kind == "model_attributes_type" or (kind == "dict_type" and where == "body"):
        return 'The request body must be a JSON object: send {"model": ..., ...}.'
    if kind == "missing":
        return f"Field '{where}' is missing: add it to the request."
    msg = str(e.get("msg", "is invalid")).rstrip(".")
    return f"Field '{where}' is invalid ({msg}): fix it and retry."

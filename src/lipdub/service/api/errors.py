"""The errors routes raise (answered as envelopes by ``handlers``), the ones several
routes share, and the one-sentence messages made from validation failures.

``HttpError`` is named apart from ``lipdub.client.ApiError``, which is what a client sees
of it.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from lipdub.service.api import schemas
from lipdub.service.ops.disk import DiskLow

MODELS_TEXT = "'kling-identify-face' or 'kling-advanced-lip-sync'"


class HttpError(Exception):
    """An answer other than 200: its status, one sentence, optional data and headers.
    ``reason`` tells apart refusals that share a status where another API's codes do
    (Kling's 1302 rate vs 1303 concurrency, both 429)."""

    def __init__(
        self,
        status: int,
        message: str,
        data: Any = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data
        self.headers = headers
        self.reason = reason


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


# The body model of each model tag (the create endpoint's discriminated union).
_BY_TAG: dict[str, type[BaseModel]] = {
    "kling-identify-face": schemas.IdentifyRequest,
    "kling-advanced-lip-sync": schemas.SyncRequest,
}


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``list[FaceChoose] | None`` and the like."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: Sequence[Any], root: type[BaseModel] | None) -> type[BaseModel] | None:
    """The model whose field list ``loc`` (an extra field's location) points into."""
    parts = [p for p in loc[:-1] if p not in ("body", "query")]
    model = root
    if parts and parts[0] in _BY_TAG:
        model = _BY_TAG[parts[0]]
        parts = parts[1:]
    for p in parts:
        if model is None:
            return None
        if isinstance(p, int):
            continue
        field = model.model_fields.get(str(p))
        model = _inner_model(field.annotation) if field is not None else None
    return model


def _nearest(name: str, model: type[BaseModel]) -> str | None:
    """The valid field name closest to ``name`` (case aside), if one is close."""
    lowered = {v.lower(): v for v in model.model_fields}
    near = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[near[0]] if near else None


def _hint(name: str, model: type[BaseModel] | None, nearest: str | None) -> str | None:
    """The nearest valid name, or where a valid name that is out of place belongs."""
    if model is None:
        return None
    if nearest is not None:
        return f"did you mean '{nearest}'?"
    if model is schemas.SyncRequest and name in schemas.FaceChoose.model_fields:
        return "it belongs inside each face_choose entry"
    if model is schemas.FaceChoose and name in schemas.SyncRequest.model_fields:
        return "it belongs at the top level, beside face_choose"
    for tag, other in _BY_TAG.items():
        if other is not model and name in other.model_fields:
            return f"it is a field of {tag!r} requests"
    return "valid here: " + ", ".join(model.model_fields)


# A body of junk keys gets a sentence, not a page: the first few are named.
_NAMED = 5


def unknown_fields(
    errors: Sequence[Any], root: type[BaseModel] | None = None
) -> tuple[str, dict[str, Any]] | None:
    """Every field the body has and its model does not: one sentence naming them (each
    with the nearest valid name) and the same as data; None if there is none. Refused
    before the route runs, so nothing is reserved or charged."""
    names: list[str] = []
    hints: dict[str, str] = {}
    near: dict[str, str] = {}
    for e in errors:
        if e.get("type") != "extra_forbidden":
            continue
        loc = tuple(e.get("loc", ()))
        where = _where(loc)
        if where in names or not loc:
            continue
        names.append(where)
        model = _model_at(loc, root)
        nearest = _nearest(str(loc[-1]), model) if model is not None else None
        if nearest is not None:
            near[where] = nearest
        hint = _hint(str(loc[-1]), model, nearest)
        if hint:
            hints[where] = hint
    if not names:
        return None
    named = [f"'{n}' ({hints[n]})" if n in hints else f"'{n}'" for n in names[:_NAMED]]
    if len(names) > _NAMED:
        named.append(f"{len(names) - _NAMED} more")
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    what, it = ("Unknown field", "it") if len(names) == 1 else ("Unknown fields", "them")
    msg = f"{what} {listed}: fix or remove {it} and retry (nothing was charged)."
    return msg, {"unknown_fields": names[:100], "did_you_mean": near}


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

"""Task query, listing, long-poll wait, cancel and usage: what clients of the services
lipdub replaces take for granted, added to the contract without changing its fields.

The routes share the app's store, storage and (embedded) worker through ``deps`` and
answer in the same ``{code, msg, data}`` envelope.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
from collections import defaultdict
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Body, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from lipdub.service.api import schemas
from lipdub.service.api.deps import Account, Services, Svc
from lipdub.service.api.envelope import PREFIX, ok
from lipdub.service.api.errors import HttpError
from lipdub.service.api.views import prices, task_view
from lipdub.service.store import ACTIVE_STATES, Row

MAX_WAIT_S = 30
CANCEL_MSG = "The task was cancelled by the client; its price was refunded."
router = APIRouter()


def encode_cursor(row: Row) -> str:
    raw = f"{int(row['create_ms'])}:{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms, task_id = raw.split(":", 1)
        return int(ms), task_id
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise HttpError(
            400, "cursor is not one this service returned: pass data.next_cursor unchanged."
        ) from None


def spend_by_day(rows: list[tuple[int, str, int]]) -> list[dict[str, Any]]:
    """Settled spend grouped by UTC day and model, newest day first."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for ms, model, micros in rows:
        day = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat()
        g = groups[(day, model)]
        g[0] += 1
        g[1] += micros
    return [
        {"date": day, "model": model, "tasks": n, "spend_micros": micros}
        for (day, model), (n, micros) in sorted(groups.items(), key=lambda kv: kv[0], reverse=True)
    ]


async def view(svc: Services, row: Row) -> dict[str, Any]:
    ctx, delivery = svc.ctx, None
    if row["callback_url"]:
        delivery = await svc.read(ctx.store.delivery_for_task, row["id"])
    return task_view(row, ctx.storage, ctx.retention_ms, delivery)


def not_found(task_id: str) -> HttpError:
    return HttpError(404, f"Task {task_id!r} not found: check the taskId returned at creation.")


@router.get(
    f"{PREFIX}/audio/generations",
    response_model=schemas.TaskEnvelope | schemas.TaskListEnvelope,
    summary="Query one task (task_id, optionally wait=S), or list the account's tasks",
    description="With `task_id`: the task's state and result, as the contract defines; "
    f"`wait` (0-{MAX_WAIT_S} s) holds the answer until the task is completed or failed. "
    "Without `task_id`: the caller's tasks newest first, each as the query returns it, "
    "`data.next_cursor` for the next page (null on the last).",
    responses={200: {"content": {"application/json": {"examples": schemas.QUERY_EXAMPLES}}}},
)
async def get_or_list(
    account: Account,
    svc: Svc,
    task_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="Seconds to hold for a final state.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100, description="List page size.")] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    model: Annotated[
        Literal["kling-identify-face", "kling-advanced-lip-sync"] | None, Query()
    ] = None,
    state: Annotated[
        Literal["pending", "processing", "completed", "failed"] | None, Query()
    ] = None,
) -> JSONResponse:
    ctx = svc.ctx
    if task_id is None:
        before = decode_cursor(cursor) if cursor else None
        rows = await svc.read(ctx.store.list_tasks, account, limit + 1, before, model, state)
        page = rows[:limit]
        deliveries = await svc.read(
            ctx.store.deliveries_for_tasks, [r["id"] for r in page if r["callback_url"]]
        )
        items = [
            task_view(r, ctx.storage, ctx.retention_ms, deliveries.get(r["id"])) for r in page
        ]
        nxt = encode_cursor(page[-1]) if len(rows) > limit else None
        return ok({"items": items, "next_cursor": nxt})
    row = await svc.read(ctx.store.get_task, task_id, account)
    if row is None:
        raise not_found(task_id)
    deadline = time.monotonic() + wait
    # The task may finish in another process: the store is the only clock to watch.
    while row["state"] in ACTIVE_STATES and time.monotonic() < deadline:
        await anyio.sleep(min(0.25, max(deadline - time.monotonic(), 0)))
        row = await svc.read(ctx.store.get_task, task_id, account) or row
    return ok(await view(svc, row))


@router.post(
    f"{PREFIX}/audio/generations/cancel",
    response_model=schemas.TaskEnvelope,
    summary="Cancel a pending or processing task (refunded; failCode 'cancelled')",
    responses={200: {"content": {"application/json": {"example": schemas.CANCELLED_EXAMPLE}}}},
)
async def cancel(
    body: Annotated[
        schemas.CancelRequest,
        Body(openapi_examples={"cancel": {"value": {"task_id": "cl3f9a0c..."}}}),
    ],
    account: Account,
    svc: Svc,
) -> JSONResponse:
    row, cancelled = await run_in_threadpool(
        svc.ctx.store.cancel, body.task_id, account, CANCEL_MSG
    )
    if row is None:
        raise not_found(body.task_id)
    if not cancelled:
        raise HttpError(
            400,
            f"Task {body.task_id!r} is already {row['state']}: only pending or processing "
            "tasks can be cancelled.",
        )
    if svc.worker is not None:
        svc.worker.cancel(body.task_id)
    return ok(await view(svc, row))


@router.get(
    f"{PREFIX}/usage",
    response_model=schemas.UsageEnvelope,
    summary="Balance, prices, and spend by day and model",
    responses={200: {"content": {"application/json": {"example": schemas.USAGE_EXAMPLE}}}},
)
async def usage(
    account: Account,
    svc: Svc,
    days: Annotated[int, Query(ge=1, le=366, description="How many days back.")] = 30,
) -> JSONResponse:
    ctx, settings = svc.ctx, svc.ctx.settings
    since = int((time.time() - days * 86400) * 1000)
    rows = await svc.read(ctx.store.spend, account, since)
    balance, reserved = await svc.read(ctx.store.balances, account)
    return ok(
        {
            "balance_micros": balance,
            "reserved_micros": reserved,
            "days": days,
            "total_micros": sum(r[2] for r in rows),
            "by_day": spend_by_day(rows),
            "prices": prices(settings),
        }
    )

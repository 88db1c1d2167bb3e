"""``POST /api/v1/audio/generations``: create an identify-face or lip-sync task.

Everything that refuses a request cheaply (an idempotent retry, disk, balance, the
account's running tasks) comes before any download; the downloads run in their own
bounded threads (see admission.py); the store then reserves the price and queues the
task in one transaction.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from lipdub.config import Settings
from lipdub.service.api import schemas
from lipdub.service.api.deps import Account, Services, Svc
from lipdub.service.api.envelope import PREFIX, envelope
from lipdub.service.api.errors import HttpError, insufficient
from lipdub.service.api.submission import RequestError, prepare
from lipdub.service.retry import is_transient
from lipdub.service.store import InsufficientBalance, TooManyTasks

log = logging.getLogger("lipdub.api")
router = APIRouter()


def minimum_price(settings: Settings, body: schemas.CreateRequest) -> int:
    """The least this request can cost: known before anything is downloaded."""
    if isinstance(body, schemas.IdentifyRequest):
        return settings.price_identify_micros
    return len(body.face_choose) * settings.price_sync_block_micros


def check_same_model(row: Any, body: schemas.CreateRequest) -> None:
    """The task an ``external_task_id`` already names answers a retry only if it is of
    the same model."""
    if row["model"] != body.model:
        raise HttpError(
            400,
            f"external_task_id {body.external_task_id!r} already names a {row['model']} "
            f"task ({row['id']}): give this {body.model} request an id of its own.",
        )


def too_many_tasks(cap: int) -> HttpError:
    return HttpError(
        429,
        f"Too many tasks at once: this account may have {cap} pending or processing; "
        "retry when one finishes.",
        headers={"Retry-After": "10"},
        reason="concurrency",
    )


def created(row: Any) -> JSONResponse:
    return envelope(
        200, "success", {"taskId": row["id"], "state": row["state"], "model": row["model"]}
    )


@router.post(
    f"{PREFIX}/audio/generations",
    response_model=schemas.CreatedEnvelope,
    summary="Create an identify-face or lip-sync task",
)
async def create_task(
    body: schemas.CreateRequest,
    account: Account,
    svc: Svc,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=256,
            description="Same as external_task_id (which wins if both are sent): a "
            "retry with the same value returns the first task and is not charged again.",
        ),
    ] = None,
) -> JSONResponse:
    if body.external_task_id is None and idempotency_key is not None:
        body.external_task_id = idempotency_key
    row, _ = await accept(svc, account, body)
    return created(row)


async def accept(
    svc: Services, account: str, body: schemas.CreateRequest, via: str | None = None
) -> tuple[Any, bool]:
    """Check, fetch, price and queue a create request: (the task, whether it is new).
    Shared by the contract's create and Kling's own API (``via="kling"``); every refusal
    is an ``HttpError`` with the contract's status."""
    ctx, settings = svc.ctx, svc.ctx.settings
    if body.external_task_id:
        existing = await run_in_threadpool(
            ctx.store.find_external, account, body.external_task_id
        )
        if existing is not None:
            check_same_model(existing, body)
            return existing, False
    # Everything that refuses the request cheaply comes before any download.
    ctx.disk.check()
    balance = await svc.read(ctx.store.balance, account)
    least = minimum_price(settings, body)
    if balance < least:
        raise insufficient(least, balance, "this task costs at least")
    cap = settings.max_tasks_per_account
    if cap and await svc.read(ctx.store.active_tasks, account) >= cap:
        raise too_many_tasks(cap)
    try:
        async with svc.admission.download_slot(account):
            # Own threads (bounded by the slots), not the shared pool: see admission.py.
            sub = await anyio.to_thread.run_sync(
                prepare, ctx, account, body, limiter=svc.admission.download_threads
            )
    except RequestError as e:
        raise HttpError(400, str(e)) from None
    try:
        row, is_new = await run_in_threadpool(ctx.store.submit, replace(sub, via=via), cap)
    except (InsufficientBalance, TooManyTasks) as e:
        ctx.storage.delete_prefix(f"tasks/{sub.task_id}")
        if isinstance(e, TooManyTasks):
            raise too_many_tasks(cap) from None
        raise insufficient(e.needed, e.balance) from None
    except Exception as e:
        if not is_transient(e):
            raise
        # The database stayed unreachable through the store's retries: whether the
        # task was recorded is unknown, so its inputs stay (a recorded task needs
        # them) and the client learns how to retry without paying twice.
        log.warning("task %s: submission not confirmed: %s", sub.task_id, type(e).__name__)
        raise HttpError(
            503,
            "The database is unreachable, so the task may or may not have been accepted: "
            "retry with the same external_task_id (or Idempotency-Key) to be charged once.",
            headers={"Retry-After": "5"},
        ) from None
    if not is_new:
        ctx.storage.delete_prefix(f"tasks/{sub.task_id}")
        check_same_model(row, body)
        return row, False
    if svc.worker is not None:
        svc.worker.wake()
    return row, True

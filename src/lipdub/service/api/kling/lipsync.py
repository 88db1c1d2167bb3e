"""``/v1/videos/advanced-lip-sync``: create (the contract's lip-sync, submitted through
the shared ``accept``), query one task by its Kling id (or its external_task_id), and
list the account's lip-sync tasks by page.

Every lip-sync task of the account is visible here, whichever API created it, under its
Kling id (``callbacks.kling``: the task id's number in decimal).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from lipdub.service.api import schemas
from lipdub.service.api.deps import Services, Svc
from lipdub.service.api.kling.auth import KlingAccount
from lipdub.service.api.kling.codes import NO_RESOURCE, PREFIX, KlingError, ok
from lipdub.service.api.kling.schemas import AdvancedLipSync
from lipdub.service.api.tasks import accept
from lipdub.service.callbacks import kling
from lipdub.service.models import SYNC

router = APIRouter()
PATH = f"{PREFIX}/videos/advanced-lip-sync"


@router.post(PATH, include_in_schema=False)
async def create(body: AdvancedLipSync, account: KlingAccount, svc: Svc) -> JSONResponse:
    # watermark_info is accepted and has no effect: lipdub makes no watermarked copy.
    req = schemas.SyncRequest.model_validate(
        {
            "model": SYNC,
            "session_id": body.session_id,
            "face_choose": body.face_choose,
            "callback_url": body.callback_url,
            "external_task_id": body.external_task_id,
        }
    )
    row, _ = await accept(svc, account, req, via="kling")
    task = kling.task_object(row, row["state"], updated_ms=int(row["create_ms"]))
    del task["task_status_msg"], task["task_result"]  # not in Kling's creation answer
    return ok(task)


@router.get(f"{PATH}/{{task_id}}", include_in_schema=False)
async def query(task_id: str, account: KlingAccount, svc: Svc) -> JSONResponse:
    row = await _find(svc, account, task_id)
    return ok(kling.task_of_row(row, svc.ctx.storage, svc.ctx.retention_ms))


async def _find(svc: Services, account: str, task_id: str) -> Any:
    """The account's lip-sync task by Kling id, else by external_task_id (as Kling's
    queries accept either); another account's task is not found, as an unknown one."""
    store = svc.ctx.store
    row = None
    own = kling.lipdub_id(task_id)
    if own is not None:
        row = await svc.read(store.get_task, own, account)
    if row is None and len(task_id) <= 256:
        row = await svc.read(store.find_external, account, task_id)
    if row is None or row["model"] != SYNC:
        raise KlingError(
            404,
            NO_RESOURCE,
            f"Task {task_id!r} not found: use the task_id (or your external_task_id) "
            "returned at creation.",
        )
    return row


@router.get(PATH, include_in_schema=False)
async def list_tasks(
    account: KlingAccount,
    svc: Svc,
    page_num: Annotated[int, Query(alias="pageNum", ge=1, le=1000)] = 1,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=500)] = 30,
) -> JSONResponse:
    ctx = svc.ctx
    rows = await svc.read(
        ctx.store.tasks_page, account, SYNC, (page_num - 1) * page_size, page_size
    )
    return ok([kling.task_of_row(r, ctx.storage, ctx.retention_ms) for r in rows])

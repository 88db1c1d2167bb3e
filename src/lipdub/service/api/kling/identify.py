"""``POST /v1/videos/identify-face``: Kling's synchronous face identification.

lipdub identifies in its task queue (the same task, price, limits and engine as the
contract's ``kling-identify-face``); this route submits that task and holds the answer
until it ends, at most ``LIPDUB_KLING_IDENTIFY_TIMEOUT_S``. Past the deadline the task is
cancelled (its price refunded) and the answer is Kling's 5002 (HTTP 504), never a
connection left hanging.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from lipdub.service.api import schemas
from lipdub.service.api.deps import Services, Svc
from lipdub.service.api.kling.auth import KlingAccount
from lipdub.service.api.kling.codes import (
    BAD_PARAMETER,
    INTERNAL,
    PREFIX,
    TIMEOUT,
    KlingError,
    ok,
)
from lipdub.service.api.kling.schemas import IdentifyFace
from lipdub.service.api.tasks import accept
from lipdub.service.callbacks.payloads import public_result
from lipdub.service.models import IDENTIFY
from lipdub.service.store import ACTIVE_STATES, Row

router = APIRouter()
# Failures that are the input's (no face, unreadable media): Kling's parameter error.
INPUT_FAILURES = {"no_faces", "media_error", "invalid_input", "limit_exceeded"}
POLL_S = 0.2


@router.post(f"{PREFIX}/videos/identify-face", include_in_schema=False)
async def identify_face(body: IdentifyFace, account: KlingAccount, svc: Svc) -> JSONResponse:
    if (body.video_id is None) == (body.video_url is None):
        raise KlingError(
            400, BAD_PARAMETER, "Give exactly one of video_id and video_url: lipdub needs "
            "video_url (video_id names a video Kling generated).",
        )
    req = schemas.IdentifyRequest.model_validate(
        {"model": IDENTIFY, "video_url": body.video_url, "video_id": body.video_id}
    )
    row, _ = await accept(svc, account, req, via="kling")
    row = await _wait(svc, row, account)
    if row["state"] == "completed":
        return ok(_face_data(svc, row))
    code = row["fail_code"]
    if code in INPUT_FAILURES:
        raise KlingError(400, BAD_PARAMETER, str(row["fail_msg"]))
    raise KlingError(500, INTERNAL, f"Identification failed ({code}): {row['fail_msg']}")


async def _wait(svc: Services, row: Any, account: str) -> Any:
    ctx = svc.ctx
    timeout = ctx.settings.kling_identify_timeout_s
    deadline = time.monotonic() + timeout
    # The task may run in another process: the store is the only clock to watch.
    while row["state"] in ACTIVE_STATES:
        if time.monotonic() >= deadline:
            await _give_up(svc, row["id"], account, timeout)
        await anyio.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.01)))
        row = await svc.read(ctx.store.get_task, row["id"], account) or row
    return row


async def _give_up(svc: Services, task_id: str, account: str, timeout: float) -> None:
    message = (
        f"Identification did not finish within {timeout:g} s (the queue was busy or the "
        "video is long); it was cancelled and not charged: retry, or send a shorter video."
    )
    _row, cancelled = await run_in_threadpool(svc.ctx.store.cancel, task_id, account, message)
    if cancelled and svc.worker is not None:
        svc.worker.cancel(task_id)
    if cancelled or _row is None:
        raise KlingError(504, TIMEOUT, message)
    # It ended between the last read and the cancel: the caller gets how it ended.


def _face_data(svc: Services, row: Row) -> dict[str, Any]:
    ctx = svc.ctx
    result = json.loads(row["result_json"]) if row["result_json"] else None
    shown = public_result(IDENTIFY, result, ctx.storage, row["complete_ms"] + ctx.retention_ms)
    faces = shown.get("faceData", {})
    return {
        "session_id": faces.get("session_id"),
        "face_data": [
            {
                "face_id": f["face_id"],
                "face_image": f["face_reference"],
                "start_time": f["start_time"],
                "end_time": f["end_time"],
            }
            for f in faces.get("face_list", [])
        ],
    }

"""``POST /api/v1/files`` (uploads, under the account's allowances) and ``/media/<key>``
(what the signed links the service hands out point at, whatever the storage backend)."""

from __future__ import annotations

import mimetypes
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from lipdub.config import Settings
from lipdub.service.api import schemas
from lipdub.service.api.deps import Account, Svc
from lipdub.service.api.envelope import PREFIX, envelope
from lipdub.service.api.errors import HttpError
from lipdub.service.api.multipart import UploadTooLarge, receive_file
from lipdub.service.storage import MissingObject
from lipdub.service.store import UploadQuota
from lipdub.service.store.db import now_ms

MB = 1024 * 1024
router = APIRouter()

# The upload endpoint parses its body itself (see multipart.py); this documents it.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def quota_check(settings: Settings, day: int, stored: int, size: int) -> None:
    per_day = settings.max_upload_bytes_per_day
    if per_day and day + size > per_day:
        raise HttpError(
            429,
            f"Upload allowance used: this account uploaded {day // MB} MB in the last "
            f"24 h of the {per_day // MB} MB allowed; retry later.",
            headers={"Retry-After": "3600"},
        )
    max_stored = settings.max_stored_bytes_per_account
    if max_stored and stored + size > max_stored:
        raise HttpError(
            429,
            f"Storage allowance used: this account's uploads hold {stored // MB} MB of "
            f"the {max_stored // MB} MB allowed; retry when older uploads expire.",
            headers={"Retry-After": "3600"},
        )


@router.post(
    f"{PREFIX}/files",
    response_model=schemas.FileEnvelope,
    summary="Upload a video or audio file; use the returned URL as video_url or sound_file",
    openapi_extra=UPLOAD_BODY,
)
async def upload(request: Request, account: Account, svc: Svc) -> JSONResponse:
    ctx, settings = svc.ctx, svc.ctx.settings
    cap = settings.max_upload_bytes
    # Refused before a byte of the body is read: disk, balance, the account's quotas.
    declared = request.headers.get("content-length", "")
    ctx.disk.check(int(declared) if declared.isdigit() else 0)
    balance = await svc.read(ctx.store.balance, account)
    if balance <= 0:
        raise HttpError(
            402,
            f"Insufficient balance: uploads need a positive balance and this account has "
            f"${balance / 1e6:.2f}; add credits (lipdub credits add ACCOUNT 1) and retry.",
            {"needed_micros": 1, "balance_micros": balance},
        )
    now = now_ms()
    day, stored = await svc.read(ctx.store.upload_usage, account, now)
    quota_check(settings, day, stored, 1)
    # The server makes the key: the client's file name never reaches a path. The
    # body lands in this machine's scratch, then goes to storage whole.
    key = f"uploads/{uuid.uuid4().hex}"
    fd, name_ = tempfile.mkstemp(dir=ctx.scratch, prefix="upload-", suffix=".part")
    part = Path(name_)
    try:
        with part.open("wb") as out:
            name, size = await receive_file(request, out, cap, ctx.disk)
        if size == 0:
            raise HttpError(400, "The uploaded file is empty: attach the file's bytes.")
        expires = now + settings.session_ttl_s * 1000
        await run_in_threadpool(ctx.storage.put_file, key, part)
        try:
            await run_in_threadpool(
                ctx.store.add_upload,
                key,
                account,
                name,
                size,
                now,
                expires,
                settings.max_upload_bytes_per_day,
                settings.max_stored_bytes_per_account,
            )
        except BaseException:
            await run_in_threadpool(ctx.storage.delete_prefix, key)
            raise
    except UploadQuota:
        day, stored = await svc.read(ctx.store.upload_usage, account, now)
        quota_check(settings, day, stored, size)
        raise
    except UploadTooLarge:
        raise HttpError(
            400, f"The file is larger than {cap // MB} MB: upload a smaller one."
        ) from None
    finally:
        os.close(fd)
        part.unlink(missing_ok=True)
    url = ctx.storage.signed_url(key, expires)
    return envelope(
        200, "success", {"url": url, "size": size, "expireTime": expires, "name": name}
    )


# HEAD too: clients and browsers check a link's size and type before fetching it.
@router.api_route("/media/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
def media(svc: Svc, key: str, e: int = 0, s: str = "") -> Response:
    storage, settings = svc.ctx.storage, svc.ctx.settings
    if not storage.verify(key, e, s, now_ms()):
        raise HttpError(
            404,
            "This media link is invalid or has expired: query the task again for a fresh link.",
        )
    gone = HttpError(404, "This media was deleted after its retention period.")
    try:
        path = storage.local_path(key)
        size = storage.size(key) if path is None else None
    except ValueError:
        raise HttpError(404, "No such media.") from None
    if path is not None:
        if not path.is_file():
            raise gone
        return FileResponse(path)
    if size is None:
        raise gone
    if settings.storage_links == "presign":
        link = storage.presigned_url(key, settings.media_presign_s)
        if link:
            return RedirectResponse(link, status_code=307)
    # A private bucket: stream it through the API (no Range support on this path).
    media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    try:
        chunks = storage.open_stream(key)
        first = next(chunks, b"")
    except MissingObject:
        raise gone from None

    def body() -> Any:
        yield first
        yield from chunks

    return StreamingResponse(
        body(), media_type=media_type, headers={"Content-Length": str(size)}
    )

"""The HTTP API: ``create_app(settings)`` builds a FastAPI app with its own store, storage
and (by default) embedded workers; nothing is global, so tests run several side by side.

Every response, errors included, is the contract's ``{code, msg, data}`` envelope with the
HTTP status repeated in ``code``.
"""

import errno
import logging
import mimetypes
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import psycopg
from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lipdub.config import Settings
from lipdub.service import docs_ui, fleetcheck, openapi, routes_console, routes_extra, schemas
from lipdub.service.admission import Admission
from lipdub.service.body_limit import BodyLimit
from lipdub.service.context import Context
from lipdub.service.db import now_ms
from lipdub.service.disk import DiskLow
from lipdub.service.engine import Engine
from lipdub.service.errors import ApiError, validation_message
from lipdub.service.faults import ThrottledLog, is_transient
from lipdub.service.health import HealthProbe
from lipdub.service.metrics import make_registry
from lipdub.service.storage import MissingObject, StorageUnavailable
from lipdub.service.store import (
    InsufficientBalance,
    Store,
    TooManyTasks,
    UploadQuota,
)
from lipdub.service.submission import RequestError, prepare
from lipdub.service.uploads import UploadTooLarge, receive_file
from lipdub.service.worker import Worker

log = logging.getLogger("lipdub.api")
T = TypeVar("T")
API = "/api/v1"
MB = 1024 * 1024

# The upload endpoint parses its body itself (see uploads.py); this documents it.
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


def envelope(
    code: int, msg: str, data: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg, "data": data}, status_code=code, headers=headers)


def insufficient(needed: int, balance: int, what: str = "this task costs") -> ApiError:
    return ApiError(
        402,
        f"Insufficient balance: {what} ${needed / 1e6:.4f} and the balance is "
        f"${balance / 1e6:.4f}; add credits and retry.",
        {"needed_micros": needed, "balance_micros": balance},
    )


def disk_low(e: DiskLow) -> ApiError:
    return ApiError(503, str(e), headers={"Retry-After": "60"})


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    engine: Engine | None = None,
    run_workers: bool | None = None,
) -> FastAPI:
    """Build the service. ``engine`` exists for tests of queue mechanics only; the
    default is the real engine in a child process."""
    ctx = Context.build(settings, store)
    if settings.fleet_check:
        fleetcheck.record(ctx)  # the API defines the fleet; workers verify against it
    embedded = settings.embedded_workers if run_workers is None else run_workers
    worker = Worker(ctx, engine) if embedded and settings.workers > 0 else None
    registry = make_registry(ctx.store)
    health = HealthProbe(settings.effective_database_url)
    outage_log = ThrottledLog(log)  # an outage: a line per 10 s, not one per request
    admission = Admission(settings)
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
    # SQLite reads of one row take tens of microseconds: running them on the event loop
    # is cheaper than a thread hop (and what lets one core serve 1,000+ queries/s). A
    # PostgreSQL round trip may wait on the network, so it goes to the thread pool.
    inline_reads = ctx.store.engines.dialect == "sqlite"

    async def read(fn: Callable[..., T], *args: Any) -> T:
        return fn(*args) if inline_reads else await run_in_threadpool(fn, *args)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await run_in_threadpool(worker.stop)
            health.close()

    app = FastAPI(
        title="lipdub",
        version="0.1.0",
        description="Lip-sync dubbing: identify faces, then re-render them to speak new "
        "audio. Every response is the envelope {code, msg, data}.",
        lifespan=lifespan,
        responses=schemas.ERROR_RESPONSES,
        docs_url=None,  # served offline by docs_ui.install
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.worker = worker
    # Base64 inflates by 4/3; allow the largest upload or inline video plus headroom.
    limit = max(settings.max_upload_bytes, settings.max_video_bytes * 4 // 3) + 1024 * 1024
    app.add_middleware(BodyLimit, max_bytes=limit)

    async def account_of(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise ApiError(401, "Missing API key: send the header 'Authorization: Bearer <key>'.")
        # Read on every request, never cached: a revoked key must answer 401 at once, in
        # every API process. It is one primary-key read (tens of microseconds on SQLite).
        account = await read(ctx.store.account_for_key, creds.credentials)
        if account is None:
            raise ApiError(
                401,
                "Invalid API key: check the key (it may have been revoked), or create one "
                "with 'lipdub keys create'.",
            )
        admission.request(account)
        return account

    Account = Annotated[str, Depends(account_of)]

    # --- errors as envelopes ---------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, e: ApiError) -> JSONResponse:
        return envelope(e.status, e.message, e.data, e.headers)

    @app.exception_handler(DiskLow)
    async def _disk_low(_r: Request, e: DiskLow) -> JSONResponse:
        err = disk_low(e)
        return envelope(err.status, err.message, None, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(r: Request, e: RequestValidationError) -> JSONResponse:
        ctype = r.headers.get("content-type", "")
        errs = e.errors()
        body_shape = errs and errs[0].get("type") in ("model_attributes_type", "dict_type")
        if r.method == "POST" and body_shape and "json" not in ctype and "multipart" not in ctype:
            return envelope(
                400,
                f"The body was sent as {ctype or 'no content type'!r}: send JSON with the "
                "header 'Content-Type: application/json'.",
            )
        return envelope(400, validation_message(errs))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 404:
            return envelope(404, "No such endpoint: see /docs for the API.")
        if e.status_code == 405:
            return envelope(405, "Method not allowed on this endpoint: see /docs.")
        return envelope(e.status_code, str(e.detail))

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
        return envelope(
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
        return envelope(
            500, f"Internal error (reference {ref}): retry, and report the reference if it repeats."
        )

    # --- tasks -------------------------------------------------------------------------

    def minimum_price(body: schemas.CreateRequest) -> int:
        """The least this request can cost: known before anything is downloaded."""
        if isinstance(body, schemas.IdentifyRequest):
            return settings.price_identify_micros
        return len(body.face_choose) * settings.price_sync_block_micros

    def same_request(row: Any, body: schemas.CreateRequest) -> JSONResponse:
        """The task an ``external_task_id`` already names, if it is of the same model."""
        if row["model"] != body.model:
            raise ApiError(
                400,
                f"external_task_id {body.external_task_id!r} already names a {row['model']} "
                f"task ({row['id']}): give this {body.model} request an id of its own.",
            )
        return _created(row)

    @app.post(
        f"{API}/audio/generations",
        response_model=schemas.CreatedEnvelope,
        summary="Create an identify-face or lip-sync task",
    )
    async def create_task(
        body: schemas.CreateRequest,
        account: Account,
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
        if body.external_task_id:
            existing = await run_in_threadpool(
                ctx.store.find_external, account, body.external_task_id
            )
            if existing is not None:
                return same_request(existing, body)
        # Everything that refuses the request cheaply comes before any download.
        ctx.disk.check()
        balance = await read(ctx.store.balance, account)
        if balance < minimum_price(body):
            raise insufficient(minimum_price(body), balance, "this task costs at least")
        cap = settings.max_tasks_per_account
        if cap and await read(ctx.store.active_tasks, account) >= cap:
            raise too_many_tasks(cap)
        try:
            with admission.download_slot(account):
                # Own threads (bounded by the slots), not the shared pool: see admission.py.
                sub = await anyio.to_thread.run_sync(
                    prepare, ctx, account, body, limiter=admission.download_threads
                )
        except RequestError as e:
            raise ApiError(400, str(e)) from None
        try:
            row, created = await run_in_threadpool(ctx.store.submit, sub, cap)
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
            raise ApiError(
                503,
                "The database is unreachable, so the task may or may not have been accepted: "
                "retry with the same external_task_id (or Idempotency-Key) to be charged once.",
                headers={"Retry-After": "5"},
            ) from None
        if not created:
            ctx.storage.delete_prefix(f"tasks/{sub.task_id}")
            return same_request(row, body)
        if worker is not None:
            worker.wake()
        return _created(row)

    def too_many_tasks(cap: int) -> ApiError:
        return ApiError(
            429,
            f"Too many tasks at once: this account may have {cap} pending or processing; "
            "retry when one finishes.",
            headers={"Retry-After": "10"},
        )

    def _created(row: Any) -> JSONResponse:
        return envelope(
            200, "success", {"taskId": row["id"], "state": row["state"], "model": row["model"]}
        )

    # Query (with wait), list, cancel and usage: see routes_extra.py.
    routes_extra.register(app, ctx, worker, account_of, read)
    # The browser console at / and its account endpoint: see routes_console.py.
    routes_console.register(app, ctx, account_of, read)

    # --- uploads and media -------------------------------------------------------------

    @app.post(
        f"{API}/files",
        response_model=schemas.FileEnvelope,
        summary="Upload a video or audio file; use the returned URL as video_url or sound_file",
        openapi_extra=UPLOAD_BODY,
    )
    async def upload(request: Request, account: Account) -> JSONResponse:
        cap = settings.max_upload_bytes
        # Refused before a byte of the body is read: disk, balance, the account's quotas.
        declared = request.headers.get("content-length", "")
        ctx.disk.check(int(declared) if declared.isdigit() else 0)
        balance = await read(ctx.store.balance, account)
        if balance <= 0:
            raise insufficient(1, balance, "uploads need a positive balance; the smallest is")
        now = now_ms()
        day, stored = await read(ctx.store.upload_usage, account, now)
        quota_check(day, stored, 1)
        # The server makes the key: the client's file name never reaches a path. The
        # body lands in this machine's scratch, then goes to storage whole.
        key = f"uploads/{uuid.uuid4().hex}"
        fd, name_ = tempfile.mkstemp(dir=ctx.scratch, prefix="upload-", suffix=".part")
        part = Path(name_)
        try:
            with part.open("wb") as out:
                name, size = await receive_file(request, out, cap, ctx.disk)
            if size == 0:
                raise ApiError(400, "The uploaded file is empty: attach the file's bytes.")
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
            day, stored = await read(ctx.store.upload_usage, account, now)
            quota_check(day, stored, size)
            raise
        except UploadTooLarge:
            raise ApiError(
                400, f"The file is larger than {cap // MB} MB: upload a smaller one."
            ) from None
        finally:
            os.close(fd)
            part.unlink(missing_ok=True)
        url = ctx.storage.signed_url(key, expires)
        return envelope(
            200, "success", {"url": url, "size": size, "expireTime": expires, "name": name}
        )

    def quota_check(day: int, stored: int, size: int) -> None:
        per_day = settings.max_upload_bytes_per_day
        if per_day and day + size > per_day:
            raise ApiError(
                429,
                f"Upload allowance used: this account uploaded {day // MB} MB in the last "
                f"24 h of the {per_day // MB} MB allowed; retry later.",
                headers={"Retry-After": "3600"},
            )
        max_stored = settings.max_stored_bytes_per_account
        if max_stored and stored + size > max_stored:
            raise ApiError(
                429,
                f"Storage allowance used: this account's uploads hold {stored // MB} MB of "
                f"the {max_stored // MB} MB allowed; retry when older uploads expire.",
                headers={"Retry-After": "3600"},
            )

    # HEAD too: clients and browsers check a link's size and type before fetching it.
    @app.api_route("/media/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
    def media(key: str, e: int = 0, s: str = "") -> Response:
        if not ctx.storage.verify(key, e, s, now_ms()):
            raise ApiError(
                404,
                "This media link is invalid or has expired: query the task again for a fresh link.",
            )
        gone = ApiError(404, "This media was deleted after its retention period.")
        try:
            path = ctx.storage.local_path(key)
            size = ctx.storage.size(key) if path is None else None
        except ValueError:
            raise ApiError(404, "No such media.") from None
        if path is not None:
            if not path.is_file():
                raise gone
            return FileResponse(path)
        if size is None:
            raise gone
        if settings.storage_links == "presign":
            link = ctx.storage.presigned_url(key, settings.media_presign_s)
            if link:
                return RedirectResponse(link, status_code=307)
        # A private bucket: stream it through the API (no Range support on this path).
        media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        try:
            chunks = ctx.storage.open_stream(key)
            first = next(chunks, b"")
        except MissingObject:
            raise gone from None

        def body() -> Any:
            yield first
            yield from chunks

        return StreamingResponse(
            body(), media_type=media_type, headers={"Content-Length": str(size)}
        )

    # --- operations ------------------------------------------------------------------

    @app.get("/healthz", summary="Liveness, database and disk check")
    def healthz() -> JSONResponse:
        if not health.healthy():
            return envelope(
                503,
                f"database unreachable ({health.error}): tasks cannot be accepted or "
                "queried until it is back.",
                {"status": "database_unreachable", "workers": bool(worker)},
                headers={"Retry-After": "5"},
            )
        disk = {"freeBytes": ctx.disk.free_bytes(), "minFreeBytes": settings.min_free_bytes}
        if ctx.disk.low():
            return envelope(
                503,
                f"{ctx.disk.message()}: new work is refused until space is freed.",
                {"status": "low_disk", "workers": bool(worker), **disk},
            )
        return envelope(200, "success", {"status": "ok", "workers": bool(worker), **disk})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    openapi.install(app, settings)
    docs_ui.install(app)
    return app


__all__ = ["create_app"]

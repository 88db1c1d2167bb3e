"""The HTTP API: ``create_app(settings)`` builds a FastAPI app with its own store, storage
and (by default) embedded workers; nothing is global, so tests run several side by side.

Every response, errors included, is the contract's ``{code, msg, data}`` envelope with the
HTTP status repeated in ``code``.
"""

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from lipdub.config import Settings
from lipdub.service import schemas
from lipdub.service.body_limit import BodyLimit
from lipdub.service.context import Context
from lipdub.service.db import now_ms
from lipdub.service.engine import Engine
from lipdub.service.errors import ApiError, validation_message
from lipdub.service.metrics import make_registry
from lipdub.service.payloads import task_view
from lipdub.service.store import InsufficientBalance, Store, hash_key
from lipdub.service.submission import RequestError, prepare_identify, prepare_sync
from lipdub.service.worker import Worker

log = logging.getLogger("lipdub.api")
T = TypeVar("T")
API = "/api/v1"
AUTH_CACHE_S = 30.0


def envelope(code: int, msg: str, data: Any = None) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg, "data": data}, status_code=code)


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
    embedded = settings.embedded_workers if run_workers is None else run_workers
    worker = Worker(ctx, engine) if embedded and settings.workers > 0 else None
    registry = make_registry(ctx.store)
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
    # key hash -> (account, cached until); keys are never revoked in place, so a short
    # cache only saves a read per request and keeps the query path fast.
    auth_cache: dict[str, tuple[str, float]] = {}
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

    app = FastAPI(
        title="lipdub",
        version="0.1.0",
        description="Lip-sync dubbing: identify faces, then re-render them to speak new "
        "audio. Every response is the envelope {code, msg, data}.",
        lifespan=lifespan,
        responses=schemas.ERROR_RESPONSES,
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
        h = hash_key(creds.credentials)
        hit = auth_cache.get(h)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        account = await read(ctx.store.account_for_key, creds.credentials)
        if account is None:
            raise ApiError(
                401, "Invalid API key: check the key, or create one with 'lipdub keys create'."
            )
        if len(auth_cache) > 10_000:
            auth_cache.clear()
        auth_cache[h] = (account, now + AUTH_CACHE_S)
        return account

    Account = Annotated[str, Depends(account_of)]

    # --- errors as envelopes ---------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, e: ApiError) -> JSONResponse:
        return envelope(e.status, e.message, e.data)

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

    @app.exception_handler(Exception)
    async def _crash(_r: Request, e: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("internal error %s", ref)
        return envelope(
            500, f"Internal error (reference {ref}): retry, and report the reference if it repeats."
        )

    # --- tasks -------------------------------------------------------------------------

    @app.post(
        f"{API}/audio/generations",
        response_model=schemas.CreatedEnvelope,
        summary="Create an identify-face or lip-sync task",
    )
    async def create_task(body: schemas.CreateRequest, account: Account) -> JSONResponse:
        if body.external_task_id:
            existing = await run_in_threadpool(
                ctx.store.find_external, account, body.external_task_id
            )
            if existing is not None:
                return _created(existing)
        try:
            if isinstance(body, schemas.IdentifyRequest):
                sub = await run_in_threadpool(prepare_identify, ctx, account, body)
            else:
                sub = await run_in_threadpool(prepare_sync, ctx, account, body)
        except RequestError as e:
            raise ApiError(400, str(e)) from None
        try:
            row, created = await run_in_threadpool(ctx.store.submit, sub)
        except InsufficientBalance as e:
            ctx.storage.delete_prefix(f"tasks/{sub.task_id}")
            raise ApiError(
                402,
                f"Insufficient balance: this task costs ${e.needed / 1e6:.4f} and the balance "
                f"is ${e.balance / 1e6:.4f}; add credits and retry.",
                {"needed_micros": e.needed, "balance_micros": e.balance},
            ) from None
        if not created:
            ctx.storage.delete_prefix(f"tasks/{sub.task_id}")
        elif worker is not None:
            worker.wake()
        return _created(row)

    def _created(row: Any) -> JSONResponse:
        return envelope(
            200, "success", {"taskId": row["id"], "state": row["state"], "model": row["model"]}
        )

    @app.get(
        f"{API}/audio/generations",
        response_model=schemas.TaskEnvelope,
        summary="Query a task's state and result",
    )
    async def get_task(
        account: Account,
        task_id: Annotated[str, Query(min_length=1, max_length=64)],
    ) -> JSONResponse:
        row = await read(ctx.store.get_task, task_id, account)
        if row is None:
            raise ApiError(
                404, f"Task {task_id!r} not found: check the taskId returned at creation."
            )
        delivery = await read(ctx.store.delivery_for_task, task_id) if row["callback_url"] else None
        return envelope(200, "success", task_view(row, ctx.storage, ctx.retention_ms, delivery))

    # --- uploads and media -------------------------------------------------------------

    @app.post(
        f"{API}/files",
        response_model=schemas.FileEnvelope,
        summary="Upload a video or audio file; use the returned URL as video_url or sound_file",
    )
    async def upload(account: Account, file: Annotated[UploadFile, File()]) -> JSONResponse:
        cap = settings.max_upload_bytes
        name = "".join(c for c in (file.filename or "file") if c.isalnum() or c in "._-")[-80:]
        key = f"uploads/{uuid.uuid4().hex}/{name or 'file'}"
        dest = ctx.storage.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with dest.open("wb") as out:
            while chunk := await file.read(1024 * 1024):
                size += len(chunk)
                if size > cap:
                    out.close()
                    ctx.storage.delete_prefix(key.rsplit("/", 1)[0])
                    raise ApiError(
                        400,
                        f"The file is larger than {cap // (1024 * 1024)} MB: upload a smaller one.",
                    )
                out.write(chunk)
        if size == 0:
            ctx.storage.delete_prefix(key.rsplit("/", 1)[0])
            raise ApiError(400, "The uploaded file is empty: attach the file's bytes.")
        expires = now_ms() + settings.session_ttl_s * 1000
        url = ctx.storage.signed_url(key, expires)
        return envelope(200, "success", {"url": url, "size": size, "expireTime": expires})

    @app.get("/media/{key:path}", include_in_schema=False)
    def media(key: str, e: int = 0, s: str = "") -> Response:
        if not ctx.storage.verify(key, e, s, now_ms()):
            raise ApiError(
                404,
                "This media link is invalid or has expired: query the task again for a fresh link.",
            )
        try:
            path = ctx.storage.path(key)
        except ValueError:
            raise ApiError(404, "No such media.") from None
        if not path.is_file():
            raise ApiError(404, "This media was deleted after its retention period.")
        return FileResponse(path)

    # --- operations ------------------------------------------------------------------

    @app.get("/healthz", summary="Liveness and database check")
    def healthz() -> JSONResponse:
        ctx.store.count_deliveries()  # raises (-> 500) if the database is unreachable
        return envelope(200, "success", {"status": "ok", "workers": bool(worker)})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


__all__ = ["create_app"]

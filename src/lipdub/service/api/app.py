"""``create_app(settings)``: a FastAPI app with its own store, storage and (by default)
embedded workers; nothing is global, so tests run several side by side.

The app is assembled here and nowhere else: the shared ``Services`` (see deps.py), the
body limit, the error handlers, then the routers in the order their paths appear in the
OpenAPI document. Every response, errors included, is the contract's ``{code, msg, data}``
envelope with the HTTP status repeated in ``code``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from lipdub.config import Settings
from lipdub.service.api import (
    console,
    docs_ui,
    files,
    handlers,
    kling,
    openapi,
    operations,
    queries,
    schemas,
    tasks,
)
from lipdub.service.api.admission import Admission
from lipdub.service.api.body_limit import BodyLimit
from lipdub.service.api.deps import Services
from lipdub.service.api.shared_limits import shared_limits
from lipdub.service.context import Context
from lipdub.service.ops import fleetcheck
from lipdub.service.ops.health import HealthProbe
from lipdub.service.ops.metrics import make_registry
from lipdub.service.store import Store
from lipdub.service.worker import EngineRunner, Worker


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    engine: EngineRunner | None = None,
    run_workers: bool | None = None,
) -> FastAPI:
    """Build the service. ``engine`` exists for tests of queue mechanics only; the
    default is the real engine in a child process."""
    ctx = Context.build(settings, store)
    if settings.fleet_check:
        fleetcheck.record(ctx)  # the API defines the fleet; workers verify against it
    embedded = settings.embedded_workers if run_workers is None else run_workers
    worker = Worker(ctx, engine) if embedded and settings.workers > 0 else None
    svc = Services(
        ctx=ctx,
        worker=worker,
        admission=Admission(settings, shared_limits(settings, ctx.store)),
        health=HealthProbe(settings.effective_database_url),
        registry=make_registry(ctx.store),
        inline_reads=ctx.store.engines.dialect == "sqlite",
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await run_in_threadpool(worker.stop)
            svc.health.close()
            svc.admission.close()

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
    app.state.services = svc
    app.state.ctx = ctx
    app.state.worker = worker
    # Base64 inflates by 4/3; allow the largest upload or inline video plus headroom.
    limit = max(settings.max_upload_bytes, settings.max_video_bytes * 4 // 3) + 1024 * 1024
    app.add_middleware(BodyLimit, max_bytes=limit)
    handlers.install(app, ctx)

    app.include_router(tasks.router)  # create
    app.include_router(queries.router)  # query (with wait), list, cancel, usage
    console.mount_static(app)  # the browser console at / and its account endpoint
    app.include_router(console.router)
    app.include_router(files.router)  # uploads and /media links
    app.include_router(kling.router)  # Kling's own API, /v1 (docs/kling.md)
    app.include_router(operations.router)  # /healthz, /metrics
    openapi.install(app, settings)
    docs_ui.install(app)
    return app


__all__ = ["create_app"]

"""``/healthz`` (liveness, database and disk) and ``/metrics`` (Prometheus).

Plain functions: FastAPI runs them in its thread pool, so a database that is slow to
answer the probe never holds the event loop."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lipdub.service.api.deps import Svc
from lipdub.service.api.envelope import envelope

router = APIRouter()


@router.get("/healthz", summary="Liveness, database and disk check")
def healthz(svc: Svc) -> JSONResponse:
    ctx, health, workers = svc.ctx, svc.health, bool(svc.worker)
    if not health.healthy():
        return envelope(
            503,
            f"database unreachable ({health.error}): tasks cannot be accepted or "
            "queried until it is back.",
            {"status": "database_unreachable", "workers": workers},
            headers={"Retry-After": "5"},
        )
    disk = {"freeBytes": ctx.disk.free_bytes(), "minFreeBytes": ctx.settings.min_free_bytes}
    if ctx.disk.low():
        return envelope(
            503,
            f"{ctx.disk.message()}: new work is refused until space is freed.",
            {"status": "low_disk", "workers": workers, **disk},
        )
    return envelope(200, "success", {"status": "ok", "workers": workers, **disk})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(svc: Svc) -> Response:
    return Response(generate_latest(svc.registry), media_type=CONTENT_TYPE_LATEST)

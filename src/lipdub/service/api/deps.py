"""What the routers share, as FastAPI dependencies: the app's ``Services`` (context,
embedded worker, admission, health probe, metrics) and the caller's account.

``create_app`` builds one ``Services`` per app and keeps it in ``app.state``; nothing is
global, so tests run several apps side by side. Both dependencies are ``async``: FastAPI
runs a plain function in its thread pool, a hop the query path cannot afford.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from lipdub.service.api.admission import Admission
from lipdub.service.api.errors import HttpError
from lipdub.service.context import Context
from lipdub.service.ops.health import HealthProbe
from lipdub.service.worker import Worker

T = TypeVar("T")
bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


@dataclass
class Services:
    ctx: Context
    worker: Worker | None
    admission: Admission
    health: HealthProbe
    registry: CollectorRegistry
    # SQLite reads of one row take tens of microseconds: running them on the event loop
    # is cheaper than a thread hop (and what lets one core serve 1,000+ queries/s). A
    # PostgreSQL round trip may wait on the network, so it goes to the thread pool.
    inline_reads: bool

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args) if self.inline_reads else await run_in_threadpool(fn, *args)


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


async def account_of(
    svc: Svc,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HttpError(401, "Missing API key: send the header 'Authorization: Bearer <key>'.")
    # Read on every request, never cached: a revoked key must answer 401 at once, in
    # every API process. It is one primary-key read (tens of microseconds on SQLite).
    account = await svc.read(svc.ctx.store.account_for_key, creds.credentials)
    if account is None:
        raise HttpError(
            401,
            "Invalid API key: check the key (it may have been revoked), or create one "
            "with 'lipdub keys create'.",
        )
    await svc.admission.request(account)
    return account


Account = Annotated[str, Depends(account_of)]

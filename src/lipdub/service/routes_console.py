"""The web console: its static files at ``/`` and one read-only endpoint the public API
lacks (the ledger rows and the price each task was charged).

The console otherwise makes only the calls any client makes; this endpoint answers in
the same ``{code, msg, data}`` envelope under the same API key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select

from lipdub.service import tables as t
from lipdub.service.context import Context

STATIC = Path(__file__).with_name("console")
API = "/api/v1"
LEDGER_ROWS = 15
MAX_COSTS = 100
EXAMPLE = {
    "code": 200,
    "msg": "success",
    "data": {
        "account": "acme",
        "balance_micros": 4_986_700,
        "reserved_micros": 0,
        "ledger": [
            {
                "task_id": "cl3f9a0c...",
                "kind": "settle",
                "amount_micros": 12_600,
                "balance_after": 4_986_700,
                "reserved_after": 0,
                "note": "",
                "created_ms": 1_705_123_500_000,
            }
        ],
        "prices": {"identify_micros": 700, "sync_block_micros": 6300, "sync_block_ms": 5000},
        "costs": {"cl3f9a0c...": 12_600},
    },
}


def task_prices(ctx: Context, account: str, task_ids: list[str]) -> dict[str, int]:
    """What each of the caller's tasks was charged (or reserved); others' ids are absent."""
    if not task_ids:
        return {}
    with ctx.store.engines.read.connect() as conn:
        rows = conn.execute(
            select(t.tasks.c.id, t.tasks.c.price_micros).where(
                t.tasks.c.account == account, t.tasks.c.id.in_(task_ids)
            )
        )
        return {r[0]: int(r[1]) for r in rows}


def register(
    app: FastAPI,
    ctx: Context,
    account_of: Callable[..., Awaitable[str]],
    read: Callable[..., Awaitable[Any]],
) -> None:
    settings = ctx.settings
    app.mount("/console", StaticFiles(directory=STATIC), name="console")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        # no-cache: a browser must pick up a new console after an upgrade.
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get(
        f"{API}/account",
        summary="Balance, reserved amount, recent ledger rows, prices, and task prices",
        description="`task_ids` (comma-separated, at most 100): the price each of these "
        "tasks was charged, in `costs` (a failed task's price was refunded).",
        responses={200: {"content": {"application/json": {"example": EXAMPLE}}}},
    )
    async def account_view(
        account: str = Depends(account_of),
        task_ids: Annotated[str, Query(max_length=100 * 65)] = "",
    ) -> JSONResponse:
        ids = [i for i in task_ids.split(",") if i][:MAX_COSTS]
        summary = await read(ctx.store.account_summary, account, LEDGER_ROWS)
        costs = await read(task_prices, ctx, account, ids)
        ledger = [
            {
                k: e[k]
                for k in (
                    "task_id",
                    "kind",
                    "amount_micros",
                    "balance_after",
                    "reserved_after",
                    "note",
                    "created_ms",
                )
            }
            for e in summary["ledger"]
        ]
        data = {
            "account": account,
            "balance_micros": summary["balance_micros"],
            "reserved_micros": summary["reserved_micros"],
            "ledger": ledger,
            "prices": {
                "identify_micros": settings.price_identify_micros,
                "sync_block_micros": settings.price_sync_block_micros,
                "sync_block_ms": settings.sync_block_ms,
            },
            "costs": costs,
        }
        return JSONResponse({"code": 200, "msg": "success", "data": data})

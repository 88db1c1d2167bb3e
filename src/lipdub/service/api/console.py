"""The web console: its static files at ``/`` and one read-only endpoint the public API
lacks (the ledger rows and the price each task was charged).

The console otherwise makes only the calls any client makes; this endpoint answers in
the same ``{code, msg, data}`` envelope under the same API key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from lipdub.service.api.deps import Account, Svc
from lipdub.service.api.envelope import PREFIX, ok
from lipdub.service.api.views import prices

STATIC = Path(__file__).with_name("static")
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


router = APIRouter()


def mount_static(app: FastAPI) -> None:
    app.mount("/console", StaticFiles(directory=STATIC), name="console")


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    # no-cache: a browser must pick up a new console after an upgrade.
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get(
    f"{PREFIX}/account",
    summary="Balance, reserved amount, recent ledger rows, prices, and task prices",
    description="`task_ids` (comma-separated, at most 100): the price each of these "
    "tasks was charged, in `costs` (a failed task's price was refunded).",
    responses={200: {"content": {"application/json": {"example": EXAMPLE}}}},
)
async def account_view(
    account: Account,
    svc: Svc,
    task_ids: Annotated[str, Query(max_length=100 * 65)] = "",
) -> JSONResponse:
    store, settings = svc.ctx.store, svc.ctx.settings
    ids = [i for i in task_ids.split(",") if i][:MAX_COSTS]
    summary = await svc.read(store.account_summary, account, LEDGER_ROWS)
    costs = await svc.read(store.task_prices, account, ids)
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
    return ok(
        {
            "account": account,
            "balance_micros": summary["balance_micros"],
            "reserved_micros": summary["reserved_micros"],
            "ledger": ledger,
            "prices": prices(settings),
            "costs": costs,
        }
    )

"""A task as the query, the list and the cancel endpoints show it (the contract's
fields, results as signed URLs, the callback's delivery state)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lipdub.config import Settings
from lipdub.service.callbacks.payloads import public_result
from lipdub.service.models import SYNC
from lipdub.service.storage import Storage


def task_view(
    row: Mapping[Any, Any],
    storage: Storage,
    retention_ms: int,
    delivery: Mapping[Any, Any] | None = None,
) -> dict[str, Any]:
    state = row["state"]
    data: dict[str, Any] = {
        "taskId": row["id"],
        "state": state,
        "model": row["model"],
        "createTime": row["create_ms"],
        "completeTime": row["complete_ms"],
        "costTime": (row["complete_ms"] - row["create_ms"]) if row["complete_ms"] else None,
    }
    if row["external_task_id"]:
        data["externalTaskId"] = row["external_task_id"]
    if state in ("pending", "processing"):
        data["progress"] = round(float(row["progress"] or 0.0), 3)
    elif state == "completed":
        if row["purged"]:
            # Past the retention period the files are gone; say so instead of dead links.
            data["expired"] = True
            if row["model"] == SYNC:
                data["resultUrls"] = []
        else:
            result = json.loads(row["result_json"]) if row["result_json"] else None
            data.update(
                public_result(row["model"], result, storage, row["complete_ms"] + retention_ms)
            )
    else:
        data["failCode"] = row["fail_code"]
        data["failMsg"] = row["fail_msg"]
        if row["model"] == SYNC:
            data["resultUrls"] = []
    if delivery is not None:
        data["callback"] = {
            "state": delivery["state"],
            "attempts": delivery["attempts"],
            "lastStatus": delivery["last_status"],
            "lastError": delivery["last_error"],
            "deliveredTime": delivery["delivered_ms"],
        }
    return data


def prices(settings: Settings) -> dict[str, int]:
    """The price list the usage and account endpoints show."""
    return {
        "identify_micros": settings.price_identify_micros,
        "sync_block_micros": settings.price_sync_block_micros,
        "sync_block_ms": settings.sync_block_ms,
    }

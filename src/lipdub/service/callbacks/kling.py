"""A task as Kling's own API shows it (``/v1``): its digit-string id, its status names and
its task object, used alike by the query, the list and the callback of tasks submitted
through that API.

lipdub's task ids are ``cl`` + 32 hex digits (a UUID); Kling's are strings of digits. The
mapping is the same number written in decimal: exact both ways, so every task has one
Kling id and nothing extra is stored or looked up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lipdub.service.models import SYNC
from lipdub.service.storage import Storage

# lipdub's four states in Kling's words.
STATUS = {
    "pending": "submitted",
    "processing": "processing",
    "completed": "succeed",
    "failed": "failed",
}
_HEX_DIGITS = 32
_MAX = 16**_HEX_DIGITS


def kling_id(task_id: str) -> str | None:
    """The Kling id (decimal digits) of a lipdub task id, or None if it has no such form."""
    if len(task_id) != 2 + _HEX_DIGITS or not task_id.startswith("cl"):
        return None
    try:
        return str(int(task_id[2:], 16))
    except ValueError:
        return None


def lipdub_id(kling_task_id: str) -> str | None:
    """The lipdub task id a Kling id names, or None if it cannot name one."""
    if not kling_task_id.isascii() or not kling_task_id.isdigit() or len(kling_task_id) > 40:
        return None
    n = int(kling_task_id)
    return f"cl{n:032x}" if n < _MAX else None


def videos(
    task_id: str, result: Mapping[Any, Any] | None, storage: Storage, expires_ms: int
) -> list[dict[str, Any]]:
    """``task_result.videos``: the dubbed video as a signed link (duration in seconds, as
    a string, Kling's type)."""
    if not result or "result_key" not in result:
        return []
    return [
        {
            "id": kling_id(task_id) or task_id,
            "url": storage.signed_url(result["result_key"], expires_ms),
            "duration": f"{float(result.get('videoDuration') or 0):g}",
        }
    ]


def task_object(
    row: Mapping[Any, Any],
    state: str,
    *,
    updated_ms: int,
    fail_msg: str | None = None,
    video_list: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Kling's task object (query, list and callback body alike)."""
    return {
        "task_id": kling_id(row["id"]) or row["id"],
        "task_status": STATUS.get(state, state),
        "task_status_msg": fail_msg or "",
        "task_info": {"external_task_id": row["external_task_id"]},
        "created_at": row["create_ms"],
        "updated_at": updated_ms,
        "task_result": {"videos": video_list or []},
    }


def task_of_row(row: Mapping[Any, Any], storage: Storage, retention_ms: int) -> dict[str, Any]:
    """A stored task as Kling's query shows it."""
    state = row["state"]
    updated = row["complete_ms"] or row["start_ms"] or row["create_ms"]
    vids: list[dict[str, Any]] = []
    if state == "completed" and not row["purged"] and row["model"] == SYNC:
        result = json.loads(row["result_json"]) if row["result_json"] else None
        vids = videos(row["id"], result, storage, row["complete_ms"] + retention_ms)
    fail = row["fail_msg"] if state == "failed" else None
    return task_object(row, state, updated_ms=int(updated), fail_msg=fail, video_list=vids)


def success_body(
    row: Mapping[Any, Any],
    result: Mapping[Any, Any],
    storage: Storage,
    complete_ms: int,
    retention_ms: int,
) -> str:
    vids = videos(row["id"], result, storage, complete_ms + retention_ms)
    return json.dumps(task_object(row, "completed", updated_ms=complete_ms, video_list=vids))


def failure_body(row: Mapping[Any, Any], message: str, complete_ms: int) -> str:
    return json.dumps(task_object(row, "failed", updated_ms=complete_ms, fail_msg=message))

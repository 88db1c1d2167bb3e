"""The JSON the service sends: task views for queries and callback bodies.

Kept apart from the routes so the worker (which builds callback bodies when a task ends)
and the API (which answers queries) produce the same shapes from the same code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lipdub.service.storage import Storage

IDENTIFY = "kling-identify-face"
SYNC = "kling-advanced-lip-sync"
MODELS = (IDENTIFY, SYNC)


def public_result(
    model: str, result: Mapping[Any, Any] | None, storage: Storage, expires_ms: int
) -> dict[str, Any]:
    """Turn the stored result (storage keys) into the wire result (signed URLs)."""
    if not result:
        return {"resultUrls": []} if model == SYNC else {}
    if model == IDENTIFY and "session_id" in result:
        return {
            "faceData": {
                "session_id": result["session_id"],
                "face_list": [
                    {
                        "face_id": f["face_id"],
                        "face_reference": storage.signed_url(f["thumbnail_key"], expires_ms),
                        "start_time": f["start_time"],
                        "end_time": f["end_time"],
                    }
                    for f in result["faces"]
                ],
            }
        }
    if model == SYNC and "result_key" in result:
        return {
            "resultUrls": [storage.signed_url(result["result_key"], expires_ms)],
            "videoDuration": result["videoDuration"],
        }
    return dict(result)


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


def _body(
    row: Mapping[Any, Any],
    state: str,
    result_obj: dict[str, Any] | None,
    fail_code: str | None,
    fail_msg: str | None,
    complete_ms: int,
) -> str:
    data = {
        "taskId": row["id"],
        "model": "kling-video/" + row["model"],
        "state": state,
        "param": row["param_json"],
        "resultJson": None if result_obj is None else json.dumps(result_obj),
        "failCode": fail_code,
        "failMsg": fail_msg,
        "costTime": complete_ms - row["create_ms"],
        "completeTime": complete_ms,
        "createTime": row["create_ms"],
    }
    return json.dumps({"code": 200, "msg": "success", "data": data})


def callback_body_for_success(
    row: Mapping[Any, Any],
    result: Mapping[Any, Any],
    storage: Storage,
    complete_ms: int,
    retention_ms: int,
) -> str:
    obj = public_result(row["model"], result, storage, complete_ms + retention_ms)
    # The contract: resultUrls always exists. Receivers written for it read
    # resultJson.resultUrls[0] for every callback, identify's too.
    return _body(row, "completed", {"resultUrls": [], **obj}, None, None, complete_ms)


def callback_body_for_failure(
    row: Mapping[Any, Any], code: str, message: str, complete_ms: int
) -> str:
    return _body(row, "failed", {"resultUrls": []}, code, message, complete_ms)

"""The callback bodies the contract defines, and the public form of a stored result.
Tasks submitted through Kling's own API get Kling's task object instead (``kling``).

The worker builds a body when a task ends, the store is handed ``WIRE`` for the failures
it decides itself (a cancel, a task whose worker kept dying), and the API's task view
(``api/views.py``) shows results through the same ``public_result``: the same shapes
from the same code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lipdub.media.fetch import origin
from lipdub.service.callbacks import kling
from lipdub.service.models import IDENTIFY, SYNC
from lipdub.service.storage import Storage


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
                        # Beyond the contract (results stored before it have none).
                        "not_renderable": f.get("not_renderable", []),
                    }
                    for f in result["faces"]
                ],
                "unusable": result.get("unusable", []),
            }
        }
    if model == SYNC and "result_key" in result:
        return {
            "resultUrls": [storage.signed_url(result["result_key"], expires_ms)],
            "videoDuration": result["videoDuration"],
            "notes": result.get("notes", []),
        }
    return dict(result)


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


def _via_kling(row: Mapping[Any, Any]) -> bool:
    """Submitted through Kling's own API (/v1): its callbacks are in Kling's shape."""
    return row.get("via") == "kling"


def callback_body_for_success(
    row: Mapping[Any, Any],
    result: Mapping[Any, Any],
    storage: Storage,
    complete_ms: int,
    retention_ms: int,
) -> str:
    if _via_kling(row):
        return kling.success_body(row, result, storage, complete_ms, retention_ms)
    obj = public_result(row["model"], result, storage, complete_ms + retention_ms)
    # The contract: resultUrls always exists. Receivers written for it read
    # resultJson.resultUrls[0] for every callback, identify's too.
    return _body(row, "completed", {"resultUrls": [], **obj}, None, None, complete_ms)


def callback_body_for_failure(
    row: Mapping[Any, Any], code: str, message: str, complete_ms: int
) -> str:
    if _via_kling(row):
        return kling.failure_body(row, message, complete_ms)
    return _body(row, "failed", {"resultUrls": []}, code, message, complete_ms)


class WireFormat:
    """The contract's callback format, as the store needs it (``store.CallbackFormat``)."""

    def failure_body(
        self, row: Mapping[Any, Any], code: str, message: str, complete_ms: int
    ) -> str:
        return callback_body_for_failure(row, code, message, complete_ms)

    def destination(self, url: str) -> str:
        return origin(url)


WIRE = WireFormat()

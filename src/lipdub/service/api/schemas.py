"""Request and response models of the wire contract; they are what /docs shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lipdub.service.models import IDENTIFY, SYNC


class IdentifyRequest(BaseModel):
    """Find the faces in a video; the result gives a session_id and face_ids."""

    model_config = ConfigDict(extra="forbid")
    model: Literal["kling-identify-face"]
    video_url: str | None = Field(
        None,
        max_length=40_000_000,
        description="http(s) URL, data: URI or Base64 of an mp4/mov; or a URL from "
        "POST /api/v1/files.",
    )
    video_id: str | None = Field(None, description="Kling-generated video id (not supported).")
    callback_url: str | None = Field(None, max_length=2048)
    external_task_id: str | None = Field(None, min_length=1, max_length=256)


SyncMode = Literal["cut_off", "loop", "bounce", "silence", "remap"]


class FaceChoose(BaseModel):
    # Unknown fields are refused (a misspelt sound_insert_time would otherwise be
    # dropped and the task charged for the wrong result); see errors.unknown_fields.
    # Times are strict integers and volumes strict numbers: true, "100" or 1.5 ms are a
    # client's mistake to report, not to guess at.
    model_config = ConfigDict(extra="forbid")
    face_id: str = Field(min_length=1, max_length=64)
    sound_file: str | None = Field(
        None, max_length=40_000_000, description="Audio as http(s) URL, data: URI or Base64."
    )
    audio_id: str | None = Field(None, description="Audio produced by the service (unsupported).")
    sound_start_time: int = Field(
        0, strict=True, ge=0, le=3_600_000, description="Crop start in the audio, ms."
    )
    sound_end_time: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=3_600_000,
        description="Crop end in the audio, ms (default: its end).",
    )
    sound_insert_time: int = Field(
        0, strict=True, ge=0, le=3_600_000, description="Start on the video, ms."
    )
    sound_volume: float = Field(1.0, strict=True, ge=0, le=2)
    original_audio_volume: float = Field(
        1.0,
        strict=True,
        ge=0,
        le=2,
        description="Gain of the video's own sound. The engine mixes one value for the "
        "whole video: the first entry's value is used.",
    )
    sync_mode: SyncMode | None = Field(
        None,
        description="What to do when the clip and the video from sound_insert_time to its "
        "end differ in length (lipdub extension). Absent: the contract's rule, a clip "
        "running past the video's end is a 400. cut_off: cut it at the video's end. "
        "loop / bounce: repeat a shorter clip (forwards / forwards-then-backwards) to the "
        "video's end, cut a longer one. silence: pad with silence, refuse a longer one "
        "(the contract's rule, spelled out). remap: time-stretch the clip (pitch kept) to "
        "end exactly with the video.",
    )


class SyncRequest(BaseModel):
    """Re-render the chosen faces of an identified video to speak new audio."""

    model_config = ConfigDict(extra="forbid")
    model: Literal["kling-advanced-lip-sync"]
    session_id: str = Field(min_length=1, max_length=64)
    face_choose: list[FaceChoose] = Field(min_length=1, max_length=16)
    callback_url: str | None = Field(None, max_length=2048)
    external_task_id: str | None = Field(None, min_length=1, max_length=256)


CreateRequest = Annotated[IdentifyRequest | SyncRequest, Field(discriminator="model")]


class Envelope(BaseModel):
    code: int = Field(description="The HTTP status, repeated.")
    msg: str = Field(description="'success', or one sentence saying what to fix.")
    data: Any = None


class CreatedData(BaseModel):
    taskId: str
    state: Literal["pending", "processing", "completed", "failed"]
    model: Literal["kling-identify-face", "kling-advanced-lip-sync"]


class NotRenderable(BaseModel):
    start_time: int = Field(description="ms")
    end_time: int = Field(description="ms")
    reason: Literal["turned", "mouth_covered"] = Field(
        description="turned: the head is turned too far for its mouth to be re-rendered; "
                    "mouth_covered: something is in front of the mouth.")


class FaceOut(BaseModel):
    face_id: str
    face_reference: str = Field(description="Signed URL of a thumbnail (no API key needed).")
    start_time: int = Field(description="Start of the face's longest visible span, ms.")
    end_time: int = Field(description="End of that span, ms.")
    not_renderable: list[NotRenderable] = Field(
        default_factory=list,
        description="Beyond the contract: where the face is seen but lip-sync leaves its "
                    "frames as they are (the task's notes say so).")


class UnusableFace(BaseModel):
    reason: Literal["too_small", "too_brief", "turned"] = Field(
        description="too_small: under the smallest face size searched; too_brief: seen for "
                    "less than the mouth model needs; turned: turned too far on almost "
                    "every frame.")
    start_time: int = Field(description="ms")
    end_time: int = Field(description="ms")
    size_px: int = Field(description="median face width, pixels")


class FaceData(BaseModel):
    session_id: str
    face_list: list[FaceOut]
    unusable: list[UnusableFace] = Field(
        default_factory=list,
        description="Beyond the contract: faces found but not in face_list (no face_id), "
                    "and why.")


class CallbackState(BaseModel):
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    lastStatus: int | None = None
    lastError: str | None = None
    deliveredTime: int | None = None


class TaskData(BaseModel):
    taskId: str
    state: Literal["pending", "processing", "completed", "failed"]
    model: Literal["kling-identify-face", "kling-advanced-lip-sync"]
    createTime: int = Field(description="ms since the epoch")
    completeTime: int | None = None
    costTime: int | None = Field(None, description="ms from creation to completion")
    progress: float | None = Field(None, description="0..1 while pending or processing")
    externalTaskId: str | None = None
    faceData: FaceData | None = None
    resultUrls: list[str] | None = None
    videoDuration: float | None = Field(None, description="seconds")
    notes: list[str] | None = Field(
        None, description="Beyond the contract, lip-sync: audio cut, looped or stretched, "
                          "and frames of a chosen face left as they are, with the reason.")
    failCode: str | None = None
    failMsg: str | None = None
    callback: CallbackState | None = None


class CreatedEnvelope(Envelope):
    data: CreatedData


class TaskEnvelope(Envelope):
    data: TaskData


class FileData(BaseModel):
    url: str = Field(description="Use as video_url or sound_file; expires with expireTime.")
    size: int
    expireTime: int
    name: str = Field(description="The file name the client sent, as metadata only.")


class FileEnvelope(Envelope):
    data: FileData


class ErrorEnvelope(Envelope):
    data: Any = Field(None, description="null, or details (402: needed_micros, balance_micros).")


class TaskList(BaseModel):
    items: list[TaskData] = Field(description="Newest first, each as the task query returns it.")
    next_cursor: str | None = Field(
        description="Pass as cursor for the next page; null at the end."
    )


class TaskListEnvelope(Envelope):
    data: TaskList


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: str = Field(min_length=1, max_length=64)


class SpendRow(BaseModel):
    date: str = Field(description="UTC day, YYYY-MM-DD")
    model: str
    tasks: int
    spend_micros: int


class Prices(BaseModel):
    identify_micros: int
    sync_block_micros: int = Field(description="per started block of audio, per face")
    sync_block_ms: int


class Usage(BaseModel):
    balance_micros: int
    reserved_micros: int = Field(description="held for pending and processing tasks")
    days: int
    total_micros: int
    by_day: list[SpendRow]
    prices: Prices


class UsageEnvelope(Envelope):
    data: Usage


_T = "cl3f9a0c2b7e4d41c8a1f0e2d3c4b5a697"
_FACE = {
    "face_id": "face_001",
    "face_reference": "https://dub.example.com/media/tasks/cl.../face_001.jpg?e=1707715450000&s=...",
    "start_time": 0,
    "end_time": 5040,
}
TASK_EXAMPLES: dict[str, dict[str, Any]] = {
    "identify completed": {
        "taskId": _T, "state": "completed", "model": IDENTIFY, "createTime": 1705123450000,
        "completeTime": 1705123456000, "costTime": 6000,
        "faceData": {"session_id": "session_8c1d...", "face_list": [_FACE]},
    },
    "lip-sync processing": {
        "taskId": _T, "state": "processing", "model": SYNC, "createTime": 1705123450000,
        "completeTime": None, "costTime": None, "progress": 0.42,
    },
    "lip-sync completed": {
        "taskId": _T, "state": "completed", "model": SYNC, "createTime": 1705123450000,
        "completeTime": 1705123500000, "costTime": 50000, "externalTaskId": "scene-14-take-3",
        "resultUrls": ["https://dub.example.com/media/tasks/cl.../result.mp4?e=...&s=..."],
        "videoDuration": 5.04,
        "callback": {"state": "delivered", "attempts": 1, "lastStatus": 200,
                     "lastError": None, "deliveredTime": 1705123500120},
    },
    "failed": {
        "taskId": _T, "state": "failed", "model": IDENTIFY, "createTime": 1705123450000,
        "completeTime": 1705123452000, "costTime": 2000, "failCode": "no_faces",
        "failMsg": "No face was found in the video: send a video where a face is visible.",
    },
}
QUERY_EXAMPLES: dict[str, dict[str, Any]] = {
    **{
        name: {"summary": name, "value": {"code": 200, "msg": "success", "data": data}}
        for name, data in TASK_EXAMPLES.items()
    },
    "list": {
        "summary": "list (no task_id)",
        "value": {"code": 200, "msg": "success", "data": {
            "items": [TASK_EXAMPLES["lip-sync completed"]],
            "next_cursor": "MTcwNTEyMzQ1MDAwMDpjbDNm",
        }},
    },
}
CANCELLED_EXAMPLE = {
    "code": 200, "msg": "success", "data": {
        "taskId": _T, "state": "failed", "model": SYNC, "createTime": 1705123450000,
        "completeTime": 1705123460000, "costTime": 10000, "failCode": "cancelled",
        "failMsg": "The task was cancelled by the client; its price was refunded.",
        "resultUrls": [],
    },
}
USAGE_EXAMPLE = {
    "code": 200, "msg": "success", "data": {
        "balance_micros": 4_980_300, "reserved_micros": 6300, "days": 30,
        "total_micros": 13_300,
        "by_day": [
            {"date": "2024-01-13", "model": SYNC, "tasks": 2, "spend_micros": 12_600},
            {"date": "2024-01-13", "model": IDENTIFY, "tasks": 1, "spend_micros": 700},
        ],
        "prices": {"identify_micros": 700, "sync_block_micros": 6300, "sync_block_ms": 5000},
    },
}


def _err(code: int, msg: str, data: Any = None) -> dict[str, Any]:
    return {"application/json": {"example": {"code": code, "msg": msg, "data": data}}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorEnvelope,
        "description": "Bad request (every invalid parameter, also what frameworks call 422): "
        "the message says what to fix. An unknown or misspelt field is refused too (never "
        "ignored, never charged): the message names it and the nearest valid name, and "
        "data lists them (unknown_fields, did_you_mean).",
        "content": _err(400, "Field 'face_choose[0].sound_volume' is invalid (Input should be "
                        "less than or equal to 2): fix it and retry."),
    },
    401: {
        "model": ErrorEnvelope,
        "description": "Missing or invalid API key.",
        "content": _err(401, "Missing API key: send the header 'Authorization: Bearer <key>'."),
    },
    402: {
        "model": ErrorEnvelope,
        "description": "Insufficient balance.",
        "content": _err(
            402, "Insufficient balance: this task costs $0.0063 and the balance is $0.0010; "
            "add credits and retry.", {"needed_micros": 6300, "balance_micros": 1000},
        ),
    },
    404: {
        "model": ErrorEnvelope,
        "description": "Not found (also another account's task).",
        "content": _err(404, "Task 'cl-x' not found: check the taskId returned at creation."),
    },
    429: {
        "model": ErrorEnvelope,
        "description": "A per-account limit; retry after Retry-After seconds.",
        "content": _err(429, "Too many tasks at once: this account may have 20 pending or "
                        "processing; retry when one finishes."),
    },
    500: {
        "model": ErrorEnvelope,
        "description": "Internal error.",
        "content": _err(500, "Internal error (reference 3f2a1b0c9d8e): retry, and report the "
                        "reference if it repeats."),
    },
    503: {
        "model": ErrorEnvelope,
        "description": "Out of download slots or low on disk; retry after Retry-After seconds.",
        "content": _err(503, "The server is low on disk space: retry later."),
    },
}

__all__ = ["IDENTIFY", "SYNC"]

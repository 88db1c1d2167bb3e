"""Request and response models of the wire contract; they are what /docs shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lipdub.service.payloads import IDENTIFY, SYNC


class IdentifyRequest(BaseModel):
    """Find the faces in a video; the result gives a session_id and face_ids."""

    model_config = ConfigDict(extra="ignore")
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


class FaceChoose(BaseModel):
    # Times are strict integers and volumes strict numbers: true, "100" or 1.5 ms are a
    # client's mistake to report, not to guess at.
    model_config = ConfigDict(extra="ignore")
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


class SyncRequest(BaseModel):
    """Re-render the chosen faces of an identified video to speak new audio."""

    model_config = ConfigDict(extra="ignore")
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


class FaceOut(BaseModel):
    face_id: str
    face_reference: str = Field(description="Signed URL of a thumbnail (no API key needed).")
    start_time: int = Field(description="Start of the face's longest visible span, ms.")
    end_time: int = Field(description="End of that span, ms.")


class FaceData(BaseModel):
    session_id: str
    face_list: list[FaceOut]


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
    data: None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "Bad request: the message says what to fix."},
    401: {"model": ErrorEnvelope, "description": "Missing or invalid API key."},
    402: {"model": ErrorEnvelope, "description": "Insufficient balance."},
    404: {"model": ErrorEnvelope, "description": "Not found."},
    500: {"model": ErrorEnvelope, "description": "Internal error."},
}

__all__ = ["IDENTIFY", "SYNC"]

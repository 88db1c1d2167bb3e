"""Request bodies of Kling's own API. Face entries are the reseller contract's
(``schemas.FaceChoose``: the same fields, rules and lipdub's ``sync_mode`` extension), so
both APIs accept exactly the same lip-sync."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from lipdub.service.api.schemas import FaceChoose


class IdentifyFace(BaseModel):
    """POST /v1/videos/identify-face: exactly one of video_id / video_url."""

    model_config = ConfigDict(extra="forbid")
    video_id: str | None = Field(None, max_length=256)
    video_url: str | None = Field(None, max_length=40_000_000)


class WatermarkInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False


class AdvancedLipSync(BaseModel):
    """POST /v1/videos/advanced-lip-sync."""

    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(min_length=1, max_length=64)
    face_choose: list[FaceChoose] = Field(min_length=1, max_length=16)
    external_task_id: str | None = Field(None, min_length=1, max_length=256)
    callback_url: str | None = Field(None, max_length=2048)
    watermark_info: WatermarkInfo | None = None


# The body model of each Kling path, for the unknown-field hints of the error handler.
BODY_OF_PATH: dict[str, type[BaseModel]] = {
    "/v1/videos/identify-face": IdentifyFace,
    "/v1/videos/advanced-lip-sync": AdvancedLipSync,
}

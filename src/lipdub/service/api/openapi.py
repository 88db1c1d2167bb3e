"""The published OpenAPI document: examples for every request and response, the real 400
error (FastAPI advertises 422, which this service never sends), the failCode table,
limits and prices read from the running service's settings."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from lipdub.config import Settings
from lipdub.service.api.envelope import PREFIX

# failCode -> when it happens. The engine's codes come from engine.FAIL_CODES; the others
# from the worker, the claimer and the cancel endpoint.
FAIL_CODES: dict[str, str] = {
    "no_faces": "no face was found in the video (identify), or the chosen face is not usable",
    "media_error": "a video or audio file could not be decoded (corrupt, unsupported codec)",
    "limit_exceeded": "a file is over a size or duration limit the engine enforces",
    "invalid_input": "the request is consistent but the engine refused it (message says why)",
    "engine_error": "the engine could not render this input (message says why)",
    "engine_crashed": "the engine process died; resubmit",
    "internal_error": "a bug in the service; resubmit, and report it if it repeats",
    "disk_full": "the server ran low on disk while running the task; resubmit later",
    "session_expired": "the session's files were deleted; identify the video again",
    "worker_lost": "the task's worker died max_attempts times; resubmit",
    "cancelled": "the client cancelled it (POST /api/v1/audio/generations/cancel)",
    # Accounts on the Kling engine (docs/kling-engine.md): Kling's errors, mapped.
    "upstream_config": "Kling engine: the server's Kling settings or public URL are missing",
    "upstream_auth": "Kling engine: Kling refused the server's credentials (codes 1000-1004)",
    "upstream_account": "Kling engine: the server's Kling account is out of credit (1100-1102)",
    "upstream_forbidden": "Kling engine: Kling denies this service the feature (1103, 1304)",
    "upstream_invalid_input": "Kling engine: Kling refused a parameter (1200, 1201)",
    "upstream_not_found": "Kling engine: Kling no longer has the session (1202, 1203)",
    "content_policy": "Kling engine: Kling's content policy refused the media (1300, 1301)",
    "upstream_busy": "Kling engine: Kling's rate or concurrency limit outlasted the retries",
    "upstream_unavailable": "Kling engine: Kling was down (5000-5002) longer than the retries",
    "upstream_failed": "Kling engine: Kling ran the task and reported it failed",
    "upstream_error": "Kling engine: any other answer from Kling",
}

_SYNC_EXAMPLE = {
    "model": "kling-advanced-lip-sync",
    "session_id": "session_8c1d...",
    "face_choose": [
        {
            "face_id": "face_001",
            "sound_file": "https://dub.example.com/media/uploads/4f1c...?e=...&s=...",
            "sound_start_time": 0,
            "sound_end_time": 3000,
            "sound_insert_time": 1000,
            "sound_volume": 1,
            "original_audio_volume": 0.5,
            "sync_mode": "cut_off",
        }
    ],
    "callback_url": "https://example.com/hooks/lipsync",
    "external_task_id": "scene-14-take-3",
}
CREATE_EXAMPLES = {
    "identify": {
        "summary": "identify faces",
        "value": {
            "model": "kling-identify-face",
            "video_url": "https://example.com/clip.mp4",
            "callback_url": "https://example.com/hooks/lipsync",
        },
    },
    "lip-sync": {"summary": "lip-sync one face", "value": _SYNC_EXAMPLE},
}
CREATED_EXAMPLE = {
    "code": 200,
    "msg": "success",
    "data": {"taskId": "cl3f9a0c...", "state": "pending", "model": "kling-identify-face"},
}
FILE_EXAMPLE = {
    "code": 200,
    "msg": "success",
    "data": {
        "url": "http://127.0.0.1:8000/media/uploads/4f1c...?e=1705209850000&s=...",
        "size": 482113,
        "expireTime": 1705209850000,
        "name": "clip.mp4",
    },
}


def description(s: Settings) -> str:
    codes = "\n".join(f"| `{c}` | {why} |" for c, why in FAIL_CODES.items())
    mb = 1024 * 1024
    return f"""Lip-sync dubbing: identify faces, then re-render them to speak new audio.
The contract is Kling's advanced lip-sync; list, cancel, wait, usage, `sync_mode` and
uploads are additive extensions.

Every response, errors included, is the envelope `{{code, msg, data}}` with the HTTP status
repeated in `code`; an invalid parameter is **400** (never 422), `msg` says what to fix.

**Failed tasks** carry `failCode` and `failMsg`; the price is refunded.

| failCode | meaning |
|---|---|
{codes}

**Prices** (micro-dollars, 1 USD = 1,000,000): identify {s.price_identify_micros} per call;
lip-sync {s.price_sync_block_micros} per started {s.sync_block_ms / 1000:g} s of each face's
audio clip. The price is reserved at creation (402 if the balance cannot cover it),
settled on success, refunded on failure.

**Limits**: video ≤ {s.max_video_bytes // mb} MB and
{s.min_video_ms / 1000:g}-{s.max_video_ms / 1000:g} s, sides {s.min_side_px}-{s.max_side_px} px;
audio ≤ {s.max_audio_bytes // mb} MB and
{s.max_audio_ms / 1000:g} s, clips ≥ {s.min_clip_ms} ms; ≤ {s.max_faces_per_task} faces per task;
uploads ≤ {s.max_upload_bytes // mb} MB; {s.max_tasks_per_account or "unlimited"} pending or
processing tasks per account; {s.rate_limit_per_s or "unlimited"} requests/s per account
(429 with Retry-After past a limit). Sessions live {s.session_ttl_s // 3600} h, results
{s.result_retention_days:g} days.
"""


def _drop_422(schema: dict[str, Any]) -> None:
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            if isinstance(op, dict):
                op.get("responses", {}).pop("422", None)
    comps = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)


def _example(op: dict[str, Any], status: str, example: Any) -> None:
    content = op["responses"][status].setdefault("content", {}).setdefault("application/json", {})
    content.setdefault("example", example)


def install(app: FastAPI, settings: Settings) -> None:
    """Replace ``app.openapi`` with the documented schema (built once, on first use)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=description(settings),
                routes=app.routes,
            )
            _drop_422(schema)
            paths = schema["paths"]
            create = paths[f"{PREFIX}/audio/generations"]["post"]
            create["requestBody"]["content"]["application/json"]["examples"] = CREATE_EXAMPLES
            _example(create, "200", CREATED_EXAMPLE)
            _example(paths[f"{PREFIX}/files"]["post"], "200", FILE_EXAMPLE)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]

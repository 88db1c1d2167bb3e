"""Lip-sync validation and pricing before acceptance, on a stored session."""

from __future__ import annotations

import base64
import json

import pytest

from lipdub.service.api.schemas import SyncRequest
from lipdub.service.api.submission import RequestError, prepare_sync
from lipdub.service.context import Context
from lipdub.service.store.db import now_ms
from lipdub.service.store.tables import sessions

from .helpers import MEDIA

SPEECH = (
    "data:audio/wav;base64,"
    + base64.b64encode(
        (MEDIA / "videoretalking__audio_1.wav").read_bytes()  # 5.02 s
    ).decode()
)


def add_session(ctx: Context, account: str, sid: str, expires_ms: int) -> None:
    faces = [
        {"face_id": "face_001", "start_time": 0, "end_time": 8000, "segments": [[0, 8000]]},
        {
            "face_id": "face_002",
            "start_time": 6000,
            "end_time": 9000,
            "segments": [[1000, 2000], [6000, 9000]],
        },
    ]
    ctx.store.create_key(account)
    with ctx.store.engines.write.begin() as conn:
        conn.execute(
            sessions.insert().values(
                session_id=sid,
                account=account,
                task_id="t",
                video_key="v",
                dir_key="d",
                duration_ms=10_000,
                faces_json=json.dumps(faces),
                create_ms=now_ms(),
                expires_ms=expires_ms,
            )
        )


def req(sid: str, *faces: dict) -> SyncRequest:
    return SyncRequest.model_validate(
        {
            "model": "kling-advanced-lip-sync",
            "session_id": sid,
            "face_choose": [{"sound_file": SPEECH, **f} for f in faces],
        }
    )


def test_price_per_started_five_seconds_per_face(ctx: Context) -> None:
    add_session(ctx, "acme", "session_a", now_ms() + 3_600_000)
    sub = prepare_sync(
        ctx,
        "acme",
        req(
            "session_a",
            {"face_id": "face_001", "original_audio_volume": 0.3},  # 5020 ms: two blocks
            {"face_id": "face_002", "sound_end_time": 3000, "sound_insert_time": 6500},
        ),
    )
    assert sub.price_micros == 2 * 6300 + 1 * 6300
    assert sub.job["original_volume"] == 0.3  # the first entry's value
    ends = [f["end_ms"] for f in sub.job["faces"]]
    assert abs(ends[0] - 5020) < 30 and ends[1] == 3000  # default end: the audio's length
    assert sub.param["face_choose"][0]["sound_file"].startswith("<inline data")


@pytest.mark.parametrize(
    ("face", "needle"),
    [
        (
            {"face_id": "face_002", "sound_end_time": 1500, "sound_insert_time": 3000},
            "visible only at 1000-2000 ms, 6000-9000 ms",
        ),
        ({"face_id": "face_002", "sound_end_time": 1500, "sound_insert_time": 1900}, None),
        ({"face_id": "face_001", "sound_start_time": 4500}, "at least 1000 ms"),
        ({"face_id": "face_001", "sound_insert_time": 6000}, "past the video's end"),
        ({"face_id": "face_001", "audio_id": "a1"}, "both audio_id and sound_file"),
    ],
)
def test_span_and_range_rules(ctx: Context, face: dict, needle: str | None) -> None:
    add_session(ctx, "acme", "session_b", now_ms() + 3_600_000)
    if needle is None:
        assert prepare_sync(ctx, "acme", req("session_b", face)).price_micros == 6300
        return
    with pytest.raises(RequestError, match=needle):
        prepare_sync(ctx, "acme", req("session_b", face))


def test_sessions_expire_and_belong_to_their_account(ctx: Context) -> None:
    add_session(ctx, "acme", "session_old", now_ms() - 1)
    with pytest.raises(RequestError, match="expired 24 h after identification"):
        prepare_sync(ctx, "acme", req("session_old", {"face_id": "face_001"}))
    ctx.store.create_key("other")
    with pytest.raises(RequestError, match="Unknown session_id"):
        prepare_sync(ctx, "other", req("session_old", {"face_id": "face_001"}))
    with pytest.raises(RequestError, match="listed twice"):
        add_session(ctx, "acme", "session_c", now_ms() + 60_000)
        prepare_sync(
            ctx, "acme", req("session_c", {"face_id": "face_001"}, {"face_id": "face_001"})
        )

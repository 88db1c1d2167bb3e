"""Issue 23, item 4: a misspelt or unknown field is a 400 that names it (and the nearest
valid name), on a real `lipdub serve`; the request is never reserved, charged or queued.

Each body here is otherwise valid (a real session, a real uploaded speech clip), so a
service that dropped the unknown field would accept it and charge for the wrong result.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .helpers import GEN, MEDIA, Server, server_fixture, upload_file

SPEECH = MEDIA / "videoretalking__audio_1.wav"

server = server_fixture("unknown-fields")


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.new_key("typo", "1")) as c:
        yield c


@pytest.fixture(scope="module")
def video_url(api: httpx.Client, short_clip: Path) -> str:
    return upload_file(api, short_clip)


@pytest.fixture(scope="module")
def session(api: httpx.Client, video_url: str) -> dict[str, Any]:
    r = api.post(GEN, json={"model": "kling-identify-face", "video_url": video_url})
    assert r.status_code == 200, r.text
    task_id = r.json()["data"]["taskId"]
    data = api.get(GEN, params={"task_id": task_id, "wait": 30}, timeout=60).json()["data"]
    assert data["state"] == "completed", data
    return dict(data["faceData"])


@pytest.fixture(scope="module")
def speech_url(api: httpx.Client) -> str:
    return upload_file(api, SPEECH)


def sync(session: dict[str, Any], speech_url: str, **entry: Any) -> dict[str, Any]:
    face = {
        "face_id": session["face_list"][0]["face_id"],
        "sound_file": speech_url,
        "sound_end_time": 2000,
        **entry,
    }
    return {"model": "kling-advanced-lip-sync", "session_id": session["session_id"],
            "face_choose": [face]}


def books(api: httpx.Client) -> tuple[int, int, int]:
    """Balance, reserved and the number of tasks: what a refused request must not move."""
    usage = api.get("/api/v1/usage").json()["data"]
    tasks = api.get(GEN, params={"limit": 100}).json()["data"]["items"]
    return usage["balance_micros"], usage["reserved_micros"], len(tasks)


def refused(api: httpx.Client, body: dict[str, Any], *needles: str) -> dict[str, Any]:
    before = books(api)
    r = api.post(GEN, json=body)
    assert r.status_code == 400, r.text
    env = r.json()
    assert env["code"] == 400
    msg: str = env["msg"]
    assert msg.startswith("Unknown field") and msg.endswith(".") and ":" in msg, msg
    assert "nothing was charged" in msg, msg
    for n in needles:
        assert n in msg, msg
    assert books(api) == before  # not reserved, not charged, not queued
    return dict(env["data"])


def test_misspelt_insert_time_is_named_with_the_right_name(
    api: httpx.Client, session: dict[str, Any], speech_url: str
) -> None:
    data = refused(
        api,
        sync(session, speech_url, sound_insert_tme=1000),
        "'face_choose[0].sound_insert_tme'",
        "did you mean 'sound_insert_time'?",
    )
    assert data == {
        "unknown_fields": ["face_choose[0].sound_insert_tme"],
        "did_you_mean": {"face_choose[0].sound_insert_tme": "sound_insert_time"},
    }


def test_misspelt_callback_url_is_refused_for_both_models(
    api: httpx.Client, session: dict[str, Any], speech_url: str, video_url: str
) -> None:
    body = {**sync(session, speech_url), "calback_url": "http://127.0.0.1:9/hook"}
    refused(api, body, "'calback_url'", "did you mean 'callback_url'?")
    body = {"model": "kling-identify-face", "video_url": video_url,
            "calback_url": "http://127.0.0.1:9/hook"}
    data = refused(api, body, "'calback_url'", "did you mean 'callback_url'?")
    assert data["did_you_mean"] == {"calback_url": "callback_url"}


def test_top_level_original_volume_says_where_it_belongs(
    api: httpx.Client, session: dict[str, Any], speech_url: str
) -> None:
    body = {**sync(session, speech_url), "original_audio_volume": 0.2}
    refused(api, body, "'original_audio_volume'", "inside each face_choose entry")


def test_a_misspelt_required_field_is_reported_as_the_name_written(
    api: httpx.Client, session: dict[str, Any], speech_url: str
) -> None:
    body = sync(session, speech_url, Sound_Volume=1)
    body["sesion_id"] = body.pop("session_id")
    data = refused(api, body, "'sesion_id' (did you mean 'session_id'?)",
                   "'face_choose[0].Sound_Volume' (did you mean 'sound_volume'?)")
    assert sorted(data["unknown_fields"]) == ["face_choose[0].Sound_Volume", "sesion_id"]


def test_a_field_of_the_other_model_and_a_stranger(
    api: httpx.Client, video_url: str
) -> None:
    body = {"model": "kling-identify-face", "video_url": video_url, "session_id": "s",
            "xyzzy": 1}
    refused(api, body, "'session_id' (it is a field of 'kling-advanced-lip-sync' requests)",
            "'xyzzy' (valid here: model, video_url")


def test_cancel_body_is_strict_too(api: httpx.Client) -> None:
    r = api.post(GEN + "/cancel", json={"task_id": "cl-nope", "reason": "x"})
    assert r.status_code == 400, r.text
    assert "Unknown field 'reason'" in r.json()["msg"]
    r = api.post(GEN + "/cancel", json={"taskid": "cl-nope"})
    assert r.status_code == 400, r.text
    assert "did you mean 'task_id'?" in r.json()["msg"]


def test_the_same_body_without_the_typo_is_accepted(
    api: httpx.Client, session: dict[str, Any], speech_url: str
) -> None:
    r = api.post(GEN, json=sync(session, speech_url, sound_insert_time=0))
    assert r.status_code == 200, r.text
    api.post(GEN + "/cancel", json={"task_id": r.json()["data"]["taskId"]})


def test_openapi_says_so(server: Server) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in ("FaceChoose", "SyncRequest", "IdentifyRequest", "CancelRequest"):
        assert schemas[name].get("additionalProperties") is False, name
    bad = doc["paths"][GEN]["post"]["responses"]["400"]["description"]
    assert "unknown or misspelt field" in bad


def test_many_unknown_fields_make_one_sentence(api: httpx.Client, video_url: str) -> None:
    body: dict[str, Any] = {"model": "kling-identify-face", "video_url": video_url}
    body.update({f"junk_{i:02d}": i for i in range(12)})
    data = refused(api, body, "'junk_00'", "and 7 more:")
    assert len(data["unknown_fields"]) == 12

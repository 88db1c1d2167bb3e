"""The HTTP API of a real `lipdub serve` on loopback: envelopes, auth, billing, bad input."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from .helpers import GEN, MEDIA, MediaServer, Receiver, Server, server_fixture, wait_task

VIDEO = "videoretalking__face_2.mp4"


server = server_fixture(
    "api", env={"LIPDUB_MAX_VIDEO_BYTES": "1000000", "LIPDUB_MAX_AUDIO_BYTES": "3000000"}
)


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.new_key("alice", "1")


@pytest.fixture(scope="module")
def api(server: Server, key: str) -> Iterator[httpx.Client]:
    with server.client(key) as c:
        yield c


@pytest.fixture(scope="module")
def identified(api: httpx.Client, media_server: MediaServer) -> dict[str, Any]:
    """One real identify run shared by the lip-sync validation tests."""
    r = api.post(GEN, json={"model": "kling-identify-face", "video_url": media_server.url(VIDEO)})
    assert r.status_code == 200, r.text
    data = wait_task(api, r.json()["data"]["taskId"])
    assert data["state"] == "completed", data
    return data


def check_error(r: httpx.Response, status: int, *needles: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == status and body["data"] is None or status == 402
    msg: str = body["msg"]
    assert msg.endswith(".") and ":" in msg, msg  # one sentence: what, then what to do
    for n in needles:
        assert n in msg, msg
    return msg


def test_auth_required(server: Server) -> None:
    r = httpx.get(server.url + GEN, params={"task_id": "x"})
    check_error(r, 401, "Missing API key")
    r = httpx.get(server.url + GEN, params={"task_id": "x"}, headers={"Authorization": "Bearer no"})
    check_error(r, 401, "Invalid API key")


def test_unknown_route_and_task(api: httpx.Client) -> None:
    check_error(api.get("/api/v1/nothing"), 404)
    check_error(api.get(GEN, params={"task_id": "cl-nope"}), 404, "not found")
    check_error(api.get(GEN, params={"task_id": ""}), 400, "task_id")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"model": "kling-fancy"}).encode(), "Unknown model 'kling-fancy'"),
        (json.dumps({"video_url": "http://x"}).encode(), "'model' is missing"),
        (json.dumps({"model": "kling-identify-face"}).encode(), "video_url is required"),
        (
            json.dumps({"model": "kling-advanced-lip-sync", "session_id": "s"}).encode(),
            "'face_choose' is missing",
        ),
        (
            json.dumps(
                {
                    "model": "kling-advanced-lip-sync",
                    "session_id": "s",
                    "face_choose": [{"face_id": 1}],
                }
            ).encode(),
            "face_choose[0].face_id",
        ),
        (
            json.dumps(
                {
                    "model": "kling-advanced-lip-sync",
                    "session_id": "s",
                    "face_choose": [{"face_id": "f", "sound_volume": 9}],
                }
            ).encode(),
            "face_choose[0].sound_volume",
        ),
    ],
)
def test_malformed_requests_are_400(api: httpx.Client, body: bytes, needle: str) -> None:
    r = api.post(GEN, content=body, headers={"Content-Type": "application/json"})
    check_error(r, 400, needle)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://10.1.2.3/v.mp4", "private or reserved address (10.1.2.3)"),
        ("http://169.254.169.254/latest/meta-data/", "private or reserved"),
        ("{base}/redirect?to=http://169.254.169.254/x", "private or reserved address (169.254"),
        ("{base}/m/nothing-here.mp4", "HTTP 404"),
        ("{base}/m/videoretalking__audio_1.wav", "audio-only"),
        ("{base}/m/facerecognition__obama.jpg", "video_url"),
        ("{base}/big", "larger than"),
        ("file:///etc/passwd", "POST /api/v1/files"),  # names the fix for local files
        ("not a url at all!", "Base64"),
    ],
)
def test_bad_video_urls_are_400(
    api: httpx.Client, media_server: MediaServer, url: str, needle: str
) -> None:
    r = api.post(
        GEN, json={"model": "kling-identify-face", "video_url": url.format(base=media_server.base)}
    )
    check_error(r, 400, needle)


def test_private_callback_url_refused(api: httpx.Client, media_server: MediaServer) -> None:
    r = api.post(
        GEN,
        json={
            "model": "kling-identify-face",
            "video_url": media_server.url(VIDEO),
            "callback_url": "http://192.168.0.1/hook",
        },
    )
    check_error(r, 400, "callback_url", "private")


def test_upload_then_identify_by_url(api: httpx.Client, server: Server) -> None:
    data = (MEDIA / VIDEO).read_bytes()
    r = api.post("/api/v1/files", files={"file": ("clip.mp4", data, "video/mp4")})
    assert r.status_code == 200, r.text
    url = r.json()["data"]["url"]
    assert url.startswith(server.url + "/media/uploads/") and r.json()["data"]["size"] == len(data)
    assert httpx.get(url).content == data  # signed: works without the API key
    assert httpx.get(url.replace("&s=", "&s=x")).status_code == 404
    r = api.post(
        GEN, json={"model": "kling-identify-face", "video_url": url, "external_task_id": "upload-1"}
    )
    assert r.status_code == 200, r.text
    again = api.post(
        GEN, json={"model": "kling-identify-face", "video_url": url, "external_task_id": "upload-1"}
    )
    assert again.json()["data"]["taskId"] == r.json()["data"]["taskId"]


def test_identify_result_and_lip_sync_validation(
    api: httpx.Client, server: Server, identified: dict[str, Any], media_server: MediaServer
) -> None:
    faces = identified["faceData"]["face_list"]
    assert identified["faceData"]["session_id"].startswith("session_")
    assert faces and faces[0]["face_id"] == "face_001"
    f = faces[0]
    assert 0 <= f["start_time"] < f["end_time"] <= 5100
    thumb = httpx.get(f["face_reference"])  # no API key needed
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert identified["costTime"] == identified["completeTime"] - identified["createTime"]

    sid = identified["faceData"]["session_id"]
    audio = media_server.url("videoretalking__audio_1.wav")

    def sync(**face: Any) -> httpx.Response:
        entry = {"face_id": "face_001", "sound_file": audio, **face}
        return api.post(
            GEN,
            json={"model": "kling-advanced-lip-sync", "session_id": sid, "face_choose": [entry]},
        )

    check_error(sync(face_id="face_999"), 400, "face_999", "face_001")
    check_error(sync(sound_start_time=0, sound_end_time=500), 400, "at least 1000 ms")
    check_error(sync(sound_insert_time=4500), 400, "past the video's end")
    check_error(sync(sound_end_time=9000), 400, "past the audio's end")
    check_error(
        sync(sound_file=base64.b64encode(b"this is not audio" * 50).decode()), 400, "sound_file"
    )
    check_error(sync(sound_file=media_server.url("musetalk__eng.wav")), 400, "crop the audio")
    other = server.new_key("mallory", "1")
    with server.client(other) as m:
        r = m.post(
            GEN,
            json={
                "model": "kling-advanced-lip-sync",
                "session_id": sid,
                "face_choose": [{"face_id": "face_001", "sound_file": audio}],
            },
        )
        check_error(r, 400, "Unknown session_id")  # another account's session is invisible
        check_error(m.get(GEN, params={"task_id": identified["taskId"]}), 404)


def make_faceless_video(path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 160
        stream.pix_fmt = "yuv420p"
        for i in range(50):
            img = np.full((160, 160, 3), (i * 5) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_failed_task_is_refunded_and_called_back(
    server: Server, tmp_path: Path, receiver: Receiver
) -> None:
    key = server.new_key("refund", "0.0007")
    video = tmp_path / "blank.mp4"
    make_faceless_video(video)
    b64 = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
    with server.client(key) as c:
        r = c.post(
            GEN,
            json={"model": "kling-identify-face", "video_url": b64, "callback_url": receiver.url},
        )
        assert r.status_code == 200, r.text
        check_error(
            c.post(GEN, json={"model": "kling-identify-face", "video_url": b64}), 402, "$0.0007"
        )
        data = wait_task(c, r.json()["data"]["taskId"])
    # The contract's message, then what was searched (the smallest face size).
    assert data["state"] == "failed"
    assert data["failMsg"].startswith("Face detection failed: no faces found (")
    assert "px" in data["failMsg"]
    assert data["failCode"] == "no_faces"
    cb = receiver.wait(1)[0].json()["data"]
    assert cb["state"] == "failed" and cb["model"] == "kling-video/kling-identify-face"
    assert cb["failMsg"] == data["failMsg"] and cb["failCode"] == "no_faces"
    # resultUrls always exists (the contract), identify's failures included.
    assert json.loads(cb["resultJson"]) == {"resultUrls": []}
    assert json.loads(cb["param"])["video_url"].startswith("<inline")
    show = server.cli("account", "show", "refund", "--json")
    summary = json.loads(show.stdout)
    assert summary["balance_micros"] == 700 and summary["reserved_micros"] == 0
    assert [e["kind"] for e in summary["ledger"]] == ["refund", "reserve", "credit"]


def test_health_and_metrics(server: Server, identified: dict[str, Any]) -> None:
    assert httpx.get(server.url + "/healthz").json()["data"]["status"] == "ok"
    text = httpx.get(server.url + "/metrics").text
    assert 'lipdub_tasks{model="kling-identify-face",state="completed"}' in text
    assert "lipdub_task_duration_seconds_bucket" in text
    assert server.alive()


def test_docs_show_real_schemas(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"IdentifyRequest", "SyncRequest", "FaceChoose", "TaskData"} <= set(schemas)
    assert httpx.get(server.url + "/docs").status_code == 200


def test_fifty_concurrent_submissions_accept_exactly_ten(
    tmp_path: Path, media_server: MediaServer
) -> None:
    # No workers: tasks stay queued. Download slots for all 50 at once: this is a test
    # of the database deciding who gets the last cent, not of the per-account limits.
    s = Server(
        tmp_path / "billing",
        workers=0,
        env={"LIPDUB_MAX_DOWNLOADS_PER_ACCOUNT": "50", "LIPDUB_MAX_DOWNLOADS": "50"},
    ).start()
    try:
        key = s.new_key("race", "0.007")  # covers exactly 10 identify calls
        body = {"model": "kling-identify-face", "video_url": media_server.url(VIDEO)}

        def submit(_: int) -> int:
            return httpx.post(
                s.url + GEN, json=body, timeout=60, headers={"Authorization": f"Bearer {key}"}
            ).status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(submit, range(50)))
        assert codes.count(200) == 10 and codes.count(402) == 40, codes
        summary = json.loads(s.cli("account", "show", "race", "--json").stdout)
        assert summary["balance_micros"] == 0 and summary["reserved_micros"] == 7000
    finally:
        s.kill()


def test_oversize_body_is_refused_and_server_stays_up(tmp_path: Path) -> None:
    s = Server(
        tmp_path / "limits",
        workers=0,
        env={"LIPDUB_MAX_UPLOAD_BYTES": "1048576", "LIPDUB_MAX_VIDEO_BYTES": "1048576"},
    )
    s.start()
    try:
        key = s.new_key("big", "1")
        with s.client(key) as c:
            big = "A" * (4 * 1024 * 1024)
            r = c.post(GEN, json={"model": "kling-identify-face", "video_url": big})
            check_error(r, 400, "larger than 2 MB")
            r = c.post("/api/v1/files", files={"file": ("x.mp4", b"\0" * (3 * 1024 * 1024))})
            check_error(r, 400, "larger than")
        assert httpx.get(s.url + "/healthz").status_code == 200
    finally:
        s.kill()


def test_body_without_json_content_type_says_so(api: httpx.Client) -> None:
    r = api.post(
        GEN,
        content=b'{"model": "kling-identify-face"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    check_error(r, 400, "Content-Type: application/json")

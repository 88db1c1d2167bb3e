"""List, wait, cancel, usage, length modes and the smaller fixes, on a real `lipdub serve`
with the real engine and real media (a 3 s crop of a talking head)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from lipdub.media.audio import decode_audio, read_video_audio

from .helpers import GEN, MEDIA, Receiver, Server, server_fixture, upload_file, wait_task

SPEECH = MEDIA / "videoretalking__audio_1.wav"  # 5.0 s: longer than the 3 s clip
LONG_VIDEO = MEDIA / "infinitetalk__ref_video.mp4"  # 15 s: its identify runs for a while


server = server_fixture("extra", env={"LIPDUB_CALLBACK_TIME_SCALE": "0.01"})


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.new_key("modes", "1")) as c:
        yield c


@pytest.fixture(scope="module")
def identified(api: httpx.Client, short_clip: Path) -> dict[str, Any]:
    video_url = upload_file(api, short_clip)
    r = api.post(GEN, json={"model": "kling-identify-face", "video_url": video_url})
    task_id = r.json()["data"]["taskId"]
    t0 = time.monotonic()
    # wait=30 holds the answer until the task is done: one request, no polling.
    data = api.get(GEN, params={"task_id": task_id, "wait": 30}, timeout=60).json()["data"]
    assert data["state"] == "completed", data
    assert time.monotonic() - t0 < 30
    return data


@pytest.fixture(scope="module")
def speech_url(api: httpx.Client) -> str:
    return upload_file(api, SPEECH)


def sync_body(identified: dict[str, Any], sound: str, **entry: Any) -> dict[str, Any]:
    face = identified["faceData"]["face_list"][0]["face_id"]
    return {
        "model": "kling-advanced-lip-sync",
        "session_id": identified["faceData"]["session_id"],
        "face_choose": [{"face_id": face, "sound_file": sound, "original_audio_volume": 0,
                         **entry}],
    }


def loudness(track: np.ndarray, sr: int, a_s: float, b_s: float) -> float:
    seg = track[int(a_s * sr) : int(b_s * sr)]
    return float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def modes(
    api: httpx.Client, identified: dict[str, Any], speech_url: str, tmp_path_factory: Any
) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """One real render per length mode; the output's sound track of each."""
    cases = {
        "cut_off": {"sync_mode": "cut_off"},  # 5.0 s on a 3 s video: cut at 3 s
        "remap": {"sync_mode": "remap"},  # squeezed to 3 s, pitch kept
        "loop": {"sync_mode": "loop", "sound_end_time": 1200},  # 1.2 s repeated to 3 s
        "bounce": {"sync_mode": "bounce", "sound_end_time": 1200},
        "silence": {"sync_mode": "silence", "sound_end_time": 1200},  # then silence
    }
    created = {}
    for name, entry in cases.items():
        r = api.post(GEN, json=sync_body(identified, speech_url, **entry))
        assert r.status_code == 200, (name, r.text)
        created[name] = r.json()["data"]["taskId"]
    out = {}
    folder = tmp_path_factory.mktemp("modes")
    for name, task_id in created.items():
        data = wait_task(api, task_id, timeout=300)
        assert data["state"] == "completed", data
        path = folder / f"{name}.mp4"
        path.write_bytes(httpx.get(data["resultUrls"][0], timeout=60).content)
        out[name] = (data, read_video_audio(path, 16000, 1)[:, 0])
    return out


def test_length_modes_shape_the_audio(modes: dict[str, tuple[dict[str, Any], np.ndarray]]) -> None:
    sr = 16000
    for _name, (data, track) in modes.items():
        assert abs(data["videoDuration"] - 3.0) < 0.1  # the video keeps its length
        assert len(track) / sr == pytest.approx(3.0, abs=0.1)
    # The original sound is muted: what is heard after 1.2 s is the mode's doing.
    silent = modes["silence"][1]
    assert loudness(silent, sr, 1.5, 2.9) < 0.1 * loudness(silent, sr, 0.1, 1.1)
    for name in ("loop", "bounce", "cut_off", "remap"):
        track = modes[name][1]
        assert loudness(track, sr, 1.5, 2.9) > 0.3 * loudness(track, sr, 0.1, 1.1), name
    # loop repeats the clip itself: 1.2 s later the track is the same again.
    loop = modes["loop"][1]
    a, b = loop[int(0.2 * sr) : int(0.9 * sr)], loop[int(1.4 * sr) : int(2.1 * sr)]
    assert np.corrcoef(a, b)[0, 1] > 0.9
    # bounce plays it backwards after the first pass.
    bounce = modes["bounce"][1]
    fwd, back = bounce[int(0.3 * sr) : int(0.9 * sr)], bounce[int(1.5 * sr) : int(2.1 * sr)]
    assert np.corrcoef(fwd, back[::-1])[0, 1] > 0.9
    # remap squeezes 5 s of speech into 3 s: its end is in, cut_off's is not.
    speech = decode_audio(SPEECH, sr, 1)[:, 0]
    tail = speech[int(4.2 * sr) : int(4.8 * sr)]

    def best_match(track: np.ndarray, seg: np.ndarray) -> float:
        scores = [abs(np.corrcoef(track[i : i + len(seg)], seg)[0, 1])
                  for i in range(0, len(track) - len(seg), sr // 100)]
        return max(scores)

    assert best_match(modes["cut_off"][1], tail) < 0.5


def test_absent_mode_is_the_contracts_rule_and_names_the_fix(
    api: httpx.Client, identified: dict[str, Any], speech_url: str
) -> None:
    r = api.post(GEN, json=sync_body(identified, speech_url))
    assert r.status_code == 400
    msg = r.json()["msg"]
    assert "past the video's end" in msg and "sync_mode cut_off" in msg and "remap" in msg
    r = api.post(GEN, json=sync_body(identified, speech_url, sync_mode="stretchy"))
    assert r.status_code == 400 and "face_choose[0].sync_mode" in r.json()["msg"]
    # start after end says so, instead of "clip is 0 ms"
    r = api.post(
        GEN,
        json=sync_body(identified, speech_url, sound_start_time=2000, sound_end_time=1000),
    )
    assert r.status_code == 400 and "is not after sound_start_time (2000 ms)" in r.json()["msg"]


def test_list_wait_and_usage(
    api: httpx.Client, server: Server, modes: dict[str, Any], identified: dict[str, Any]
) -> None:
    everything = api.get(GEN, params={"limit": 100}).json()["data"]
    ids = [t["taskId"] for t in everything["items"]]
    assert len(ids) == 6 and everything["next_cursor"] is None
    created = [t["createTime"] for t in everything["items"]]
    assert created == sorted(created, reverse=True)
    assert ids[-1] == identified["taskId"]
    # Pages of 4 and 2 give the same tasks; items are what the query returns.
    p1 = api.get(GEN, params={"limit": 4}).json()["data"]
    p2 = api.get(GEN, params={"limit": 4, "cursor": p1["next_cursor"]}).json()["data"]
    assert [t["taskId"] for t in p1["items"] + p2["items"]] == ids and p2["next_cursor"] is None
    one = api.get(GEN, params={"task_id": ids[0]}).json()["data"]
    assert p1["items"][0] == one
    sync_only = api.get(GEN, params={"model": "kling-advanced-lip-sync"}).json()["data"]
    assert len(sync_only["items"]) == 5
    assert api.get(GEN, params={"state": "failed"}).json()["data"]["items"] == []
    assert api.get(GEN, params={"limit": 101}).status_code == 400
    assert api.get(GEN, params={"task_id": ids[0], "wait": 31}).status_code == 400
    with server.client(server.new_key("stranger", "1")) as other:
        assert other.get(GEN).json()["data"] == {"items": [], "next_cursor": None}
    # wait on a finished task answers at once
    t0 = time.monotonic()
    assert api.get(GEN, params={"task_id": ids[0], "wait": 30}).json()["data"]["state"]
    assert time.monotonic() - t0 < 1

    usage = api.get("/api/v1/usage").json()["data"]
    # identify 700; each lip-sync placed 3 s (or 1.2 s for silence) = one 5 s block
    assert usage["total_micros"] == 700 + 5 * 6300
    assert usage["balance_micros"] == 1_000_000 - usage["total_micros"]
    assert usage["reserved_micros"] == 0
    rows = {(r["model"], r["tasks"], r["spend_micros"]) for r in usage["by_day"]}
    assert rows == {("kling-identify-face", 1, 700), ("kling-advanced-lip-sync", 5, 31500)}
    assert usage["prices"] == {"identify_micros": 700, "sync_block_micros": 6300,
                               "sync_block_ms": 5000}


def engine_running(task_id: str) -> bool:
    """Is an engine child process working on this task? (its job names the task)"""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes()
        except OSError:
            continue  # the process ended meanwhile
        if b"lipdub.service.worker.child" in args and task_id.encode() in args:
            return True
    return False


def test_cancel_stops_the_engine_refunds_and_calls_back(
    server: Server, short_clip: Path
) -> None:
    receiver = Receiver()
    try:
        with server.client(server.new_key("canceller", "0.01")) as api:
            video = upload_file(api, LONG_VIDEO)
            body = {
                "model": "kling-identify-face", "video_url": video, "callback_url": receiver.url
            }
            running = api.post(GEN, json=body).json()["data"]["taskId"]
            queued = api.post(GEN, json=body).json()["data"]["taskId"]
            deadline = time.monotonic() + 60
            while not engine_running(running):
                assert time.monotonic() < deadline, "the engine never started"
                time.sleep(0.1)
            assert api.get(GEN, params={"task_id": queued}).json()["data"]["state"] == "pending"
            for task_id in (running, queued):
                r = api.post(GEN + "/cancel", json={"task_id": task_id})
                assert r.status_code == 200, r.text
                data = r.json()["data"]
                assert data["state"] == "failed" and data["failCode"] == "cancelled"
            # The running engine is stopped (not left rendering for nobody).
            deadline = time.monotonic() + 5
            while engine_running(running):
                assert time.monotonic() < deadline, "the cancelled engine still runs"
                time.sleep(0.1)
            r = api.post(GEN + "/cancel", json={"task_id": running})
            assert r.status_code == 400 and "already failed" in r.json()["msg"]
            with server.client(server.new_key("intruder", "1")) as other:
                assert other.post(GEN + "/cancel", json={"task_id": queued}).status_code == 404
            hits = receiver.wait(2)
            for h in hits:
                d = h.json()["data"]
                assert d["state"] == "failed" and d["failCode"] == "cancelled"
                assert json.loads(d["resultJson"]) == {"resultUrls": []}
            time.sleep(1)  # a late result from the killed engine must not overwrite it
            assert api.get(GEN, params={"task_id": running}).json()["data"]["failCode"] == (
                "cancelled"
            )
            usage = api.get("/api/v1/usage").json()["data"]
            assert usage["balance_micros"] == 10_000 and usage["reserved_micros"] == 0
            assert usage["total_micros"] == 0
    finally:
        receiver.close()


def test_smaller_fixes(server: Server, api: httpx.Client, identified: dict[str, Any]) -> None:
    def create(video_url: str, **more: Any) -> httpx.Response:
        return api.post(GEN, json={"model": "kling-identify-face", "video_url": video_url, **more})

    for local in ("file:///home/me/clip.mp4", "/home/me/clip.mp4", "clip.mp4"):
        r = create(local)
        assert r.status_code == 400 and "POST /api/v1/files" in r.json()["msg"], r.text
    r = create(upload_file(api, MEDIA / "facerecognition__obama.jpg"))
    assert r.status_code == 400 and "still image" in r.json()["msg"], r.text
    r = create("https://example.com/v.mp4", callback_url="http://10.0.0.1/hook")
    assert r.status_code == 400 and "LIPDUB_ALLOW_PRIVATE_URLS" in r.json()["msg"]
    # HEAD on a media link: size and type, no body.
    link = identified["faceData"]["face_list"][0]["face_reference"]
    head = httpx.head(link)
    assert head.status_code == 200 and int(head.headers["content-length"]) > 1000
    assert head.headers["content-type"] == "image/jpeg" and head.content == b""
    # account show prints dates, not epoch milliseconds
    shown = server.cli("account", "show", "modes").stdout
    assert time.strftime("%Y-%m-%d", time.gmtime()) in shown and "UTC" in shown
    # the OpenAPI document advertises the 400 the service sends, never 422
    doc = httpx.get(server.url + "/openapi.json").json()
    assert '"422"' not in json.dumps(doc["paths"])
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path.startswith("/api/"):
                assert "400" in op["responses"], (path, method)
                assert "example" in json.dumps(op["responses"]["200"]), (path, method)
    assert "cancelled" in doc["info"]["description"]


def test_docs_are_served_offline(server: Server) -> None:
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and "cdn" not in page.text.lower()
    for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', page.text):
        r = httpx.get(server.url + asset)
        assert r.status_code == 200 and len(r.content) > 500, asset
    assert "/docs-assets/swagger-ui-bundle.js" in page.text

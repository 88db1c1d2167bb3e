"""The contract's flow end to end on a real `lipdub serve`, with the real engine: identify
a real clip, lip-sync one face to real speech, download the mp4, and check every field of
the callbacks that a real HTTP receiver records. Then crash recovery with SIGKILL."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import av
import httpx

from .helpers import GEN, MEDIA, Hit, MediaServer, Receiver, Server, wait_task

VIDEO = "videoretalking__face_2.mp4"
SPEECH = "videoretalking__audio_1.wav"


def check_callback(hit: Hit, task: dict[str, Any], request: dict[str, Any]) -> Any:
    assert hit.headers["content-type"] == "application/json"
    assert not any(k.startswith("webhook-") for k in hit.headers)
    body = hit.json()
    assert body["code"] == 200 and body["msg"] == "success"
    d = body["data"]
    assert set(d) == {
        "taskId",
        "model",
        "state",
        "param",
        "resultJson",
        "failCode",
        "failMsg",
        "costTime",
        "completeTime",
        "createTime",
    }
    assert d["taskId"] == task["taskId"] and d["state"] == "completed"
    assert d["model"] == "kling-video/" + task["model"]
    assert isinstance(d["param"], str) and json.loads(d["param"]) == request
    assert d["failCode"] is None and d["failMsg"] is None
    assert d["createTime"] == task["createTime"] and d["completeTime"] == task["completeTime"]
    assert d["costTime"] == d["completeTime"] - d["createTime"] > 0
    assert abs(d["completeTime"] - time.time() * 1000) < 600_000  # ms since the epoch
    assert isinstance(d["resultJson"], str)
    return json.loads(d["resultJson"])


def probe(path: Path) -> tuple[float, int, bool]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for p in c.demux(v) if p.size)
        duration = float(c.duration or 0) / 1e6
        return duration, frames, bool(c.streams.audio)


def test_identify_then_lip_sync_with_callbacks(
    tmp_path: Path, media_server: MediaServer, receiver: Receiver
) -> None:
    server = Server(tmp_path / "e2e").start()
    try:
        key = server.new_key("studio", "1")
        api = server.client(key)
        req = {
            "model": "kling-identify-face",
            "video_url": media_server.url(VIDEO),
            "callback_url": receiver.url,
        }
        created = api.post(GEN, json=req).json()
        assert created["code"] == 200 and created["data"]["state"] == "pending"
        task = wait_task(api, created["data"]["taskId"])
        assert task["state"] == "completed", task
        result = check_callback(receiver.wait(1)[0], task, req)
        assert result["faceData"]["session_id"] == task["faceData"]["session_id"]
        face = task["faceData"]["face_list"][0]
        assert httpx.get(face["face_reference"]).status_code == 200

        sync_req = {
            "model": "kling-advanced-lip-sync",
            "session_id": task["faceData"]["session_id"],
            "face_choose": [
                {
                    "face_id": face["face_id"],
                    "sound_file": media_server.url(SPEECH),
                    "sound_start_time": 0,
                    "sound_end_time": 5000,
                    "sound_insert_time": 0,
                    "sound_volume": 1,
                    "original_audio_volume": 0.2,
                }
            ],
            "callback_url": receiver.url,
            "external_task_id": "scene-1",
        }
        created = api.post(GEN, json=sync_req).json()
        seen_progress = set()
        latencies = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            data = api.get(GEN, params={"task_id": created["data"]["taskId"]}).json()["data"]
            latencies.append(time.perf_counter() - t0)
            if data["state"] in ("completed", "failed"):
                break
            seen_progress.add(data.get("progress"))
            time.sleep(0.1)
        assert data["state"] == "completed", data
        # The render runs in a child process: the API answered promptly all along.
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.05 and latencies[-1] < 1.0, latencies
        assert any(p is not None and 0 < p < 1 for p in seen_progress), seen_progress
        url = data["resultUrls"][0]
        out = tmp_path / "result.mp4"
        out.write_bytes(httpx.get(url, timeout=60).content)  # signed URL: no key needed
        src_duration, src_frames, _ = probe(MEDIA / VIDEO)
        duration, frames, has_audio = probe(out)
        assert frames == src_frames and has_audio
        assert abs(duration - src_duration) < 0.1
        assert abs(data["videoDuration"] - src_duration) < 0.1
        result = check_callback(receiver.wait(2)[1], data, sync_req)
        assert result["resultUrls"] == [url.split("?")[0] + "?" + url.split("?")[1]]
        deadline = time.monotonic() + 10  # the receiver answered; the store records it next
        while wait_task(api, data["taskId"])["callback"]["state"] != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.05)

        summary = json.loads(server.cli("account", "show", "studio", "--json").stdout)
        assert summary["balance_micros"] == 1_000_000 - 700 - math.ceil(5000 / 5000) * 6300
        assert summary["reserved_micros"] == 0
    finally:
        server.kill()


def test_sigkill_while_processing_and_while_a_callback_is_pending(
    tmp_path: Path, media_server: MediaServer
) -> None:
    receiver = Receiver(statuses=[500, 500])
    env = {"LIPDUB_LEASE_S": "2", "LIPDUB_HEARTBEAT_S": "0.5"}
    server = Server(tmp_path / "crash", env=env).start()
    try:
        key = server.new_key("crash", "0.01")
        api = server.client(key)
        req = {
            "model": "kling-identify-face",
            "video_url": media_server.url(VIDEO),
            "callback_url": receiver.url,
        }
        task_id = api.post(GEN, json=req).json()["data"]["taskId"]
        deadline = time.monotonic() + 30
        while api.get(GEN, params={"task_id": task_id}).json()["data"]["state"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        server.kill()  # SIGKILL mid-render

        server.start()  # same data dir and port: the lease lapses, a worker takes over
        task = wait_task(api, task_id, timeout=120)
        assert task["state"] == "completed", task
        # Attempt 1 failed, the retry after 1 s failed too; once the store has recorded
        # both, kill the server with the callback pending (next retry due in 2 s).
        deadline = time.monotonic() + 30
        while (wait_task(api, task_id).get("callback") or {}).get("attempts") != 2:
            assert time.monotonic() < deadline, receiver.hits
            time.sleep(0.05)
        server.kill()
        assert len(receiver.hits) == 2

        server.start()
        hits = receiver.wait(3, timeout=30)
        assert hits[2].json()["data"]["taskId"] == task_id
        assert len({h.body for h in hits}) == 1
        # The receiver has its answer before the server records it: read once recorded.
        deadline = time.monotonic() + 10
        while (final := wait_task(api, task_id))["callback"]["state"] == "pending":
            assert time.monotonic() < deadline, final
            time.sleep(0.05)
        assert final["callback"]["state"] == "delivered" and final["callback"]["attempts"] == 3

        summary = json.loads(server.cli("account", "show", "crash", "--json").stdout)
        assert summary["balance_micros"] == 10_000 - 700 and summary["reserved_micros"] == 0
        assert [e["kind"] for e in summary["ledger"]] == ["settle", "reserve", "credit"]
    finally:
        server.kill()
        receiver.close()


def test_several_faces_in_one_task(tmp_path: Path, media_server: MediaServer) -> None:
    server = Server(tmp_path / "multi").start()
    try:
        key = server.new_key("multi", "1")
        api = server.client(key)
        r = api.post(
            GEN,
            json={
                "model": "kling-identify-face",
                "video_url": media_server.url("vasp__combine001.mp4"),
            },
        )
        task = wait_task(api, r.json()["data"]["taskId"])
        faces = [f["face_id"] for f in task["faceData"]["face_list"]]
        assert len(faces) >= 2, task
        speech = [media_server.url(SPEECH), media_server.url("sadtalker__RD_Radio31_000.wav")]
        body = {
            "model": "kling-advanced-lip-sync",
            "session_id": task["faceData"]["session_id"],
            "face_choose": [
                {"face_id": faces[0], "sound_file": speech[0], "sound_end_time": 2000},
                {
                    "face_id": faces[1],
                    "sound_file": speech[1],
                    "sound_end_time": 2500,
                    "sound_insert_time": 2000,
                },
            ],
        }
        r = api.post(GEN, json=body)
        assert r.status_code == 200, r.text
        data = wait_task(api, r.json()["data"]["taskId"], timeout=300)
        assert data["state"] == "completed", data
        out = tmp_path / "multi.mp4"
        out.write_bytes(httpx.get(data["resultUrls"][0], timeout=60).content)
        _, frames, has_audio = probe(out)
        assert frames == probe(MEDIA / "vasp__combine001.mp4")[1] and has_audio
        # Two faces, 2.0 s and 2.5 s: one started 5 s block each.
        summary = json.loads(server.cli("account", "show", "multi", "--json").stdout)
        assert summary["balance_micros"] == 1_000_000 - 700 - 2 * 6300
    finally:
        server.kill()

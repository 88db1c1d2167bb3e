"""Workers outside the API process, on PostgreSQL; retention; graceful hand-back."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx

from lipdub.service.store import Submission, new_task_id
from lipdub.service.store.db import now_ms
from lipdub.service.worker import Worker

from .helpers import GEN, MediaServer, Receiver, Server, lipdub_cmd, wait_task


def test_api_and_separate_worker_process_share_the_store(
    tmp_path: Path, db_url: str, media_server: MediaServer, receiver: Receiver
) -> None:
    env = {"LIPDUB_DATABASE_URL": db_url, "LIPDUB_SIGNING_KEY": "shared-secret"}
    api_server = Server(tmp_path / "shared", env=env, workers=0)
    # A worker on another machine must know the API's public address for the URLs it signs.
    api_server.env["LIPDUB_PUBLIC_URL"] = api_server.url
    api_server.start()
    worker = subprocess.Popen(
        [*lipdub_cmd(), "worker", "--workers", "1"],
        env=api_server.env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "worker.log").open("wb"),
    )
    try:
        key = api_server.new_key("split", "1")
        with api_server.client(key) as api:
            r = api.post(
                GEN,
                json={
                    "model": "kling-identify-face",
                    "video_url": media_server.url("videoretalking__face_3.mp4"),
                    "callback_url": receiver.url,
                },
            )
            data = wait_task(api, r.json()["data"]["taskId"])
        assert data["state"] == "completed", data
        assert httpx.get(data["faceData"]["face_list"][0]["face_reference"]).status_code == 200
        (hit,) = receiver.wait(1)  # delivered by the worker process
        assert hit.json()["data"]["model"] == "kling-video/kling-identify-face"
        assert json.loads(hit.json()["data"]["resultJson"])["faceData"] == data["faceData"]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
        api_server.kill()
    assert worker.returncode == 0


def test_results_are_deleted_after_retention(ctx) -> None:  # type: ignore[no-untyped-def]
    ctx.store.create_key("acme", 10_000)
    tid = new_task_id()
    ctx.store.submit(Submission("acme", "kling-advanced-lip-sync", {}, {}, 6300, None, None, tid))
    row = ctx.store.claim("w", 60_000, 3)
    result_file = ctx.storage.path(f"tasks/{tid}/result.mp4")
    result_file.parent.mkdir(parents=True)
    result_file.write_bytes(b"mp4")
    result = {"result_key": f"tasks/{tid}/result.mp4", "videoDuration": 1.0}
    ctx.store.complete(tid, row["lease_owner"], result, now_ms() - 31 * 86400_000, None)
    assert Worker(ctx, slots=0).purge_expired() == 1
    assert not result_file.exists()
    from lipdub.service.api.views import task_view

    view = task_view(ctx.store.get_task(tid), ctx.storage, ctx.retention_ms)
    assert view["expired"] is True and view["resultUrls"] == []
    assert Worker(ctx, slots=0).purge_expired() == 0


class SlowEngineForTests:
    """Test-only engine: waits until cancelled. Stands in for a long render where only
    the queue mechanics matter."""

    def run(self, job, progress, cancel):  # type: ignore[no-untyped-def]
        progress(0.5)
        cancel.wait(30)
        from lipdub.service.worker import JobFailed

        raise JobFailed("cancelled", "The task was cancelled while running.")


def test_clean_shutdown_gives_the_task_back(ctx) -> None:  # type: ignore[no-untyped-def]
    ctx.store.create_key("acme", 10_000)
    ctx.storage.put_bytes("x", b"a video")  # the attempt copies its input to scratch first
    tid = new_task_id()
    ctx.store.submit(
        Submission("acme", "kling-identify-face", {}, {"video_key": "x"}, 700, None, None, tid)
    )
    w = Worker(ctx, SlowEngineForTests(), slots=1)
    w.start()
    deadline = time.monotonic() + 10
    while ctx.store.get_task(tid)["state"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    w.stop()
    row = ctx.store.get_task(tid)
    assert row["state"] == "pending" and row["attempts"] == 0 and row["lease_owner"] is None
    assert ctx.store.account_summary("acme")["reserved_micros"] == 700  # still reserved


def test_internal_error_fails_and_refunds_at_once(ctx) -> None:  # type: ignore[no-untyped-def]
    ctx.store.create_key("acme", 10_000)
    tid = new_task_id()
    # A job without its storage keys: the worker cannot even build the engine's job.
    ctx.store.submit(Submission("acme", "kling-identify-face", {}, {}, 700, None, None, tid))
    w = Worker(ctx, SlowEngineForTests(), slots=1)
    row = ctx.store.claim(w.name, 60_000, 3)
    w.run_task(row)
    final = ctx.store.get_task(tid)
    assert final["state"] == "failed" and final["fail_code"] == "internal_error"
    assert "resubmit" in final["fail_msg"]
    assert ctx.store.account_summary("acme")["balance_micros"] == 10_000


def test_the_engine_protocol_round_trips() -> None:
    """What the worker sends its engine child, and each line the child answers, decode to
    what was encoded; a line some library printed is not a message."""
    from lipdub.service.worker.protocol import (
        FaceAudioJob,
        Failed,
        FoundFace,
        IdentifyJob,
        IdentifyOutput,
        Progress,
        Succeeded,
        SyncJob,
        SyncOutput,
        decode,
        decode_job,
        encode,
        encode_job,
    )

    identify = IdentifyJob(video="/s/in/video", out_dir="/s/out/session", log="/s/engine.log")
    sync = SyncJob(
        video="/s/in/video", session_dir="/s/in/session", original_volume=0.5,
        out_path="/s/out/result.mp4", log="/s/engine.log",
        faces=(FaceAudioJob("face_001", "/s/in/audio0", 0, 3000, 500, 1.0, "loop"),),
    )
    for job in (identify, sync):
        assert decode_job(encode_job(job)) == job
    found = IdentifyOutput("s1", "/s/out/session", {"duration_ms": 2000},
                           [FoundFace("face_001", 0, 2000, [[0, 2000]], "/s/t.jpg")])
    for msg, job in [
        (Progress(0.25), identify),
        (Succeeded(found), identify),
        (Succeeded(SyncOutput("/s/out/result.mp4", 2000, 50)), sync),
        (Failed("NoFacesError", "No face was found."), identify),
    ]:
        assert decode(encode(msg), job) == msg
    assert decode("Loading model...", identify) is None
    assert decode('{"unrelated": 1}', identify) is None

"""Disk watermark on a real `lipdub serve` (issue 8, case 3): below the free-space
threshold new work is refused with 503, /healthz says so, a running lip-sync fails at once
with a stated reason and a refund, nothing half-written stays, and the log says it once.

The data directory is a small tmpfs when the test may mount one (root, as in CI), so the
free space is the test's alone; elsewhere it is the ordinary disk with the threshold set
relative to its free space and wide margins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .helpers import GEN, MediaServer, Server, wait_task

MB = 1024 * 1024


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def disk_log_lines(server: Server) -> list[str]:
    return [ln for ln in server.read_log().splitlines() if "lipdub.disk" in ln]


def test_threshold_above_free_space_refuses_new_work(tmp_path: Path) -> None:
    server = Server(tmp_path / "full", env={"LIPDUB_MIN_FREE_BYTES": str(10**18)}).start()
    try:
        key = server.new_key("acme", "1")
        for _ in range(20):  # pollers: the log must not grow with them
            r = httpx.get(server.url + "/healthz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["code"] == 503 and body["data"]["status"] == "low_disk"
        assert "low on disk space" in body["msg"]
        with server.client(key) as c:
            r = c.post(GEN, json={"model": "kling-identify-face", "video_url": "http://x/v.mp4"})
            assert r.status_code == 503 and "low on disk space" in r.json()["msg"], r.text
            assert r.json()["code"] == 503 and r.headers["retry-after"]
            r = c.post("/api/v1/files", files={"file": ("a.mp4", b"\0" * 1000)})
            assert r.status_code == 503 and "low on disk space" in r.json()["msg"], r.text
        assert len(disk_log_lines(server)) == 1, disk_log_lines(server)
        assert "Traceback" not in server.read_log()
    finally:
        server.kill()


def test_running_lip_sync_fails_fast_and_is_refunded(
    small_disk: Path, media_server: MediaServer
) -> None:
    free = shutil.disk_usage(small_disk).free
    margin = min(free // 4, 1024 * MB)
    threshold = free - margin  # the filler below takes twice the margin
    server = Server(small_disk / "data", env={"LIPDUB_MIN_FREE_BYTES": str(threshold)}).start()
    filler = small_disk / "filler"
    try:
        key = server.new_key("studio", "1")
        with server.client(key) as c:
            r = c.post(
                GEN,
                json={
                    "model": "kling-identify-face",
                    "video_url": media_server.url("videoretalking__face_2.mp4"),
                },
            )
            ident = wait_task(c, r.json()["data"]["taskId"])
            assert ident["state"] == "completed", ident
            before = json.loads(server.cli("account", "show", "studio", "--json").stdout)
            face = ident["faceData"]["face_list"][0]["face_id"]
            r = c.post(
                GEN,
                json={
                    "model": "kling-advanced-lip-sync",
                    "session_id": ident["faceData"]["session_id"],
                    "face_choose": [
                        {
                            "face_id": face,
                            "sound_file": media_server.url("videoretalking__audio_1.wav"),
                            "sound_end_time": 5000,
                        }
                    ],
                },
            )
            assert r.status_code == 200, r.text
            task_id = r.json()["data"]["taskId"]
            deadline = time.monotonic() + 60
            while c.get(GEN, params={"task_id": task_id}).json()["data"]["state"] == "pending":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with filler.open("wb") as f:  # the disk fills while the task runs
                os.posix_fallocate(f.fileno(), 0, 2 * margin)
            filled = time.monotonic()
            data = wait_task(c, task_id, timeout=30)
            took = time.monotonic() - filled
            assert data["state"] == "failed", data
            assert data["failCode"] == "disk_full" and "low on disk space" in data["failMsg"]
            assert took < 5.0, took
            after = json.loads(server.cli("account", "show", "studio", "--json").stdout)
            assert after["balance_micros"] == before["balance_micros"]  # refunded
            assert after["reserved_micros"] == 0 and after["ledger"][0]["kind"] == "refund"
            leftovers = list((server.data_dir / "media" / "tasks" / task_id).glob("result*"))
            assert leftovers == []
            for _ in range(10):
                assert httpx.get(server.url + "/healthz").status_code == 503
            r = c.post(GEN, json={"model": "kling-identify-face", "video_url": "http://x/v"})
            assert r.status_code == 503, r.text
            filler.unlink()
            deadline = time.monotonic() + 5
            while httpx.get(server.url + "/healthz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        lines = disk_log_lines(server)
        assert len(lines) == 2 and "disk low" in lines[0] and "recovered" in lines[1], lines
        assert "Traceback" not in server.read_log()
    finally:
        filler.unlink(missing_ok=True)
        server.kill()

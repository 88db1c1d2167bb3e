"""Issue 23, item 5: clients that say what went wrong. ``wait`` raises ``TaskFailed``
(failCode, failMsg) for a failed task, ``download`` saves a result, and a local file that
does not exist is a ``FileNotFoundError`` before any request. Python and JavaScript,
against a real `lipdub serve` with real media."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lipdub import AsyncClient, Client, TaskFailed
from lipdub.client import ApiError
from tests.mediagen import no_faces

from .helpers import MEDIA, REPO, Server, free_port, server_fixture

SPEECH = MEDIA / "videoretalking__audio_1.wav"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")

server = server_fixture("client-failures")


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.new_key("failures", "1")


@pytest.fixture(scope="module")
def faceless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return no_faces(tmp_path_factory.mktemp("media") / "shapes.mp4", seconds=2.5)


@pytest.fixture(scope="module")
def identified(server: Server, key: str, short_clip: Path) -> dict[str, Any]:
    with Client(server.url, key) as c:
        return c.wait(c.identify(short_clip)["taskId"])


def test_wait_raises_task_failed_with_code_and_message(
    server: Server, key: str, faceless: Path
) -> None:
    with Client(server.url, key) as c:
        task_id = c.identify(faceless)["taskId"]
        with pytest.raises(TaskFailed) as e:
            c.wait(task_id)
        assert e.value.task_id == task_id
        assert e.value.fail_code == e.value.failCode == "no_faces"
        assert e.value.fail_msg and e.value.failMsg == e.value.fail_msg
        assert "no_faces" in str(e.value) and e.value.fail_msg in str(e.value)
        assert e.value.task["state"] == "failed"
        # The old behaviour on request, for callers that inspect failures themselves.
        assert c.wait(task_id, check=False)["failCode"] == "no_faces"
        with pytest.raises(TaskFailed):  # a failed task has nothing to download
            c.download(e.value.task, server.data_dir / "never.mp4")
        assert not (server.data_dir / "never.mp4").exists()

    async def async_wait() -> TaskFailed:
        async with AsyncClient(server.url, key) as ac:
            with pytest.raises(TaskFailed) as e:
                await ac.wait(task_id)
            return e.value

    assert asyncio.run(async_wait()).fail_code == "no_faces"


def test_download_a_result_and_a_face_reference(
    server: Server, key: str, identified: dict[str, Any], tmp_path: Path
) -> None:
    faces = identified["faceData"]
    with Client(server.url, key) as c:
        thumb = c.download(faces["face_list"][0]["face_reference"], tmp_path)
        assert thumb.parent == tmp_path and thumb.suffix == ".jpg"
        assert thumb.read_bytes()[:2] == b"\xff\xd8"  # a JPEG, under the URL's own name
        job = c.lip_sync(
            faces["session_id"],
            [{"face_id": faces["face_list"][0]["face_id"], "sound_file": SPEECH,
              "sync_mode": "cut_off"}],
        )
        out = c.download(c.wait(job["taskId"]), tmp_path / "dubbed.mp4")
        assert out == tmp_path / "dubbed.mp4" and out.read_bytes()[4:8] == b"ftyp"
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dubbed.mp4", thumb.name])
        with pytest.raises(ApiError) as e:  # a broken link: the service's own sentence
            c.download(faces["face_list"][0]["face_reference"] + "x", tmp_path / "bad.jpg")
        assert e.value.status in (403, 404) and e.value.message
        assert not (tmp_path / "bad.jpg").exists()

    async def async_download() -> Path:
        async with AsyncClient(server.url, key) as ac:
            return await ac.download(await ac.get(job["taskId"]), tmp_path / "again.mp4")

    assert asyncio.run(async_download()).read_bytes() == out.read_bytes()


def test_missing_local_files_are_file_not_found_before_any_request(tmp_path: Path) -> None:
    # Nothing listens on this port: any request would be a ConnectError.
    dead = f"http://127.0.0.1:{free_port()}"
    missing = tmp_path / "missing.mp4"
    with Client(dead, "k", retries=0) as c:
        for video in ("missing.mp4", str(missing), missing, f"file://{missing}", "~/nope.mov"):
            with pytest.raises(FileNotFoundError) as e:
                c.identify(video)
            assert "missing" in str(e.value) or "nope" in str(e.value)
        with pytest.raises(FileNotFoundError):
            c.lip_sync("session_x", [{"face_id": "face_001", "sound_file": "speech.wav"}])
        with pytest.raises(FileNotFoundError):
            c.upload(missing)
        with pytest.raises(FileNotFoundError):
            c.identify(str(tmp_path))
        # URLs and Base64 audio are still sent as they are.
        with pytest.raises(httpx.ConnectError):
            c.identify("https://example.invalid/clip.mp4")
        with pytest.raises(httpx.ConnectError):
            c.lip_sync("s", [{"face_id": "face_001", "sound_file": "UklGRiQAAABXQVZF"}])

    async def async_missing() -> None:
        async with AsyncClient(dead, "k", retries=0) as ac:
            with pytest.raises(FileNotFoundError):
                await ac.identify("missing.mp4")

    asyncio.run(async_missing())


@pytest.fixture()
def js(server: Server, key: str) -> Iterator[Any]:
    def run(script: str, **env: str) -> dict[str, Any]:
        r = subprocess.run(
            [str(NODE), "--input-type=module", "-e", script], cwd=REPO, capture_output=True,
            text=True, timeout=300,
            env={**os.environ, "LIPDUB_URL": server.url, "LIPDUB_KEY": key, **env},
        )
        assert r.returncode == 0, r.stderr
        out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
        return out

    yield run


@needs_node
def test_javascript_client_fails_loudly_and_downloads(
    js: Any, faceless: Path, identified: dict[str, Any], tmp_path: Path
) -> None:
    script = """
import { Client, TaskFailed, FileNotFoundError } from './clients/js/lipdub.mjs'
const c = new Client(process.env.LIPDUB_URL, process.env.LIPDUB_KEY)
const out = {}
const { taskId } = await c.identify(process.env.VIDEO)
try { await c.wait(taskId); out.waited = 'returned' } catch (e) {
  out.waited = [e instanceof TaskFailed, e.taskId === taskId, e.failCode, Boolean(e.failMsg),
                e.message.includes(e.failMsg)]
}
out.unchecked = (await c.wait(taskId, { check: false })).failCode
const dead = new Client('http://127.0.0.1:' + process.env.DEAD_PORT, 'k', { retries: 0 })
for (const p of ['missing.mp4', process.env.MISSING]) {
  try { await dead.identify(p); out.missing = 'sent' } catch (e) {
    out.missing = [e instanceof FileNotFoundError, e.code, e.message.includes('missing')]
  }
}
try { await dead.lipSync('s', [{ face_id: 'f', sound_file: 'speech.wav' }]) } catch (e) {
  out.missingAudio = e instanceof FileNotFoundError
}
out.thumb = await c.download(process.env.THUMB, process.env.DIR)
out.named = await c.download(process.env.THUMB, process.env.DIR + '/face.jpg')
console.log(JSON.stringify(out))
"""
    out = js(
        script, VIDEO=str(faceless), DEAD_PORT=str(free_port()),
        MISSING=str(tmp_path / "missing.wav"),
        THUMB=identified["faceData"]["face_list"][0]["face_reference"], DIR=str(tmp_path),
    )
    assert out["waited"] == [True, True, "no_faces", True, True], out
    assert out["unchecked"] == "no_faces"
    assert out["missing"] == [True, "ENOENT", True], out
    assert out["missingAudio"] is True
    thumb, named = Path(out["thumb"]), Path(out["named"])
    assert thumb.parent == tmp_path and thumb.read_bytes()[:2] == b"\xff\xd8"
    assert named == tmp_path / "face.jpg" and named.read_bytes() == thumb.read_bytes()

"""Which engine runs a task: LIPDUB_DEFAULT_ENGINE for accounts that chose none, `lipdub
account engine` per account; and a public URL Kling cannot reach, said plainly."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from lipdub.config import Settings
from lipdub.service.context import Context
from lipdub.service.worker import Worker
from tests.support.fake_kling import FakeKling

from .helpers import GEN, MEDIA, MediaServer, Server, upload_file, wait_task
from .test_kling_engine import VIDEO, kling_env


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeKling]:
    f = FakeKling()
    yield f
    f.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeKling) -> Iterator[Server]:
    # Kling by default; the public URL is a private address this service's URL policy
    # (127.0.0.1 only) does not allow: Kling could not fetch lipdub's links from it.
    env = {
        **kling_env(fake),
        "LIPDUB_DEFAULT_ENGINE": "kling",
        "LIPDUB_PUBLIC_URL": "http://10.255.255.1:9",
    }
    s = Server(tmp_path_factory.mktemp("choice"), env=env).start()
    yield s
    s.kill()


def test_an_upload_needs_a_public_url_kling_can_reach(server: Server, fake: FakeKling) -> None:
    key = server.new_key("by-default", "1")
    out = server.cli("account", "engine", "by-default")
    assert "engine kling (the default, LIPDUB_DEFAULT_ENGINE)" in out.stdout, out
    with server.client(key) as c:
        video = upload_file(c, MEDIA / VIDEO)
        r = c.post(GEN, json={"model": "kling-identify-face", "video_url": video})
        assert r.status_code == 200, r.text
        done = wait_task(c, r.json()["data"]["taskId"], timeout=60)
        balance = c.get("/api/v1/usage").json()["data"]["balance_micros"]
    assert (done["state"], done["failCode"]) == ("failed", "upstream_config")
    assert "LIPDUB_PUBLIC_URL (http://10.255.255.1:9)" in done["failMsg"]
    assert "refunded" in done["failMsg"] and balance == 1_000_000
    assert fake.identified == []  # nothing was sent to Kling


def test_an_account_set_to_local_runs_on_lipdubs_engine(
    server: Server, fake: FakeKling, media_server: MediaServer
) -> None:
    key = server.new_key("on-cpu", "1")
    out = server.cli("account", "engine", "on-cpu", "local")
    assert out.returncode == 0 and "on-cpu: engine local" in out.stdout
    shown = json.loads(server.cli("account", "show", "on-cpu", "--json").stdout)
    assert shown["engine"] == "local"
    assert server.cli("account", "engine", "on-cpu", "gpu").returncode != 0
    with server.client(key) as c:
        r = c.post(GEN, json={"model": "kling-identify-face",
                              "video_url": media_server.url(VIDEO)})
        done = wait_task(c, r.json()["data"]["taskId"], timeout=120)
    assert done["state"] == "completed", done
    assert done["faceData"]["face_list"][0]["face_id"] == "face_001"  # lipdub's own ids
    assert fake.identified == []


def test_a_worker_says_at_start_that_its_default_engine_lacks_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, default_engine="kling", workers=1)
    worker = Worker(Context.build(settings))
    with caplog.at_level(logging.WARNING, logger="lipdub.worker"):
        worker.start()
        worker.stop()
    assert "LIPDUB_DEFAULT_ENGINE=kling, but no Kling credentials are set" in caplog.text

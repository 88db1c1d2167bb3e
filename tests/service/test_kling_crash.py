"""A worker killed mid-task on the Kling engine loses nothing and pays once: real `lipdub
serve --workers 0` and `lipdub worker` processes, the fake Kling on loopback, SIGKILL,
on SQLite and on PostgreSQL.

Two windows: after Kling created the task but before its answer reached the worker (the
worker cannot know it submitted: the next attempt must find the task by its
external_task_id), and after the upstream task was recorded (the next attempt resumes
it from the record)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.fake_kling import FakeKling

from .helpers import GEN, MEDIA, MediaServer, Server, lipdub_cmd, wait_task
from .test_kling_engine import ACCOUNT, AUDIO, RESULT, SYNC_MICROS, VIDEO, identify, kling_env

SUBMIT_PATH = "/v1/videos/advanced-lip-sync"


class KlingFleet:
    """An API process without workers, and `lipdub worker` processes started and killed
    one at a time, sharing the API's database and media directory."""

    def __init__(self, root: Path, fake: FakeKling, db_url: str) -> None:
        self.db_url = db_url
        env = {
            **kling_env(fake),
            "LIPDUB_DATABASE_URL": db_url,
            "LIPDUB_LEASE_S": "2",
            "LIPDUB_HEARTBEAT_S": "0.3",
        }
        self.api = Server(root / "api", env=env, workers=0)
        self.api.env["LIPDUB_PUBLIC_URL"] = self.api.url
        self.worker: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start_worker(self) -> None:
        self.starts += 1
        log = (self.api.data_dir / f"worker{self.starts}.log").open("ab")
        env = {**self.api.env, "LIPDUB_WORKERS": "1"}
        self.worker = subprocess.Popen([*lipdub_cmd(), "worker"], env=env, stdout=log, stderr=log)

    def kill_worker(self) -> None:
        assert self.worker is not None and self.worker.poll() is None, "worker died early"
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(15)

    def db(self, sql: str, **params: str) -> list[dict[str, object]]:
        engine = create_engine(self.db_url)
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(text(sql), params).mappings()]
        engine.dispose()
        return rows

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            self.worker.wait(20)
        self.api.kill()


@pytest.fixture()
def fake() -> Iterator[FakeKling]:
    f = FakeKling(result_video=MEDIA / RESULT, processing_after_s=0.2, done_after_s=0.6)
    yield f
    f.close()


@pytest.fixture()
def fleet(tmp_path: Path, fake: FakeKling, db_url: str) -> Iterator[KlingFleet]:
    """On SQLite and on PostgreSQL (the db_url fixture)."""
    f = KlingFleet(tmp_path, fake, db_url)
    f.api.start()
    f.start_worker()
    yield f
    f.stop()


def wait_for(what: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_sync(fleet: KlingFleet, media_server: MediaServer) -> tuple[httpx.Client, str]:
    key = fleet.api.new_key(ACCOUNT, "10")
    assert fleet.api.cli("account", "engine", ACCOUNT, "kling").returncode == 0
    client = fleet.api.client(key)
    ident = identify(client, media_server.url(VIDEO))
    audio = media_server.url(AUDIO)
    r = client.post(GEN, json={
        "model": "kling-advanced-lip-sync",
        "session_id": ident["faceData"]["session_id"],
        "face_choose": [{"face_id": "0", "sound_file": audio}],
    })
    assert r.status_code == 200, r.text
    return client, r.json()["data"]["taskId"]


def assert_done_once(
    fleet: KlingFleet, fake: FakeKling, client: httpx.Client, task_id: str
) -> None:
    done = wait_task(client, task_id, timeout=90)
    assert done["state"] == "completed", done
    assert httpx.get(done["resultUrls"][0]).content == (MEDIA / RESULT).read_bytes()
    # Kling saw one submit and made one task; lipdub ran two attempts and billed once.
    assert fake.submits_created == 1
    assert sum(1 for m, p, _, _ in fake.seen if m == "POST" and p == SUBMIT_PATH) == 1
    (task,) = fleet.db("SELECT attempts, state FROM tasks WHERE id = :t", t=task_id)
    assert task == {"attempts": 2, "state": "completed"}
    moves = fleet.db(
        "SELECT kind, amount_micros FROM ledger WHERE task_id = :t ORDER BY id", t=task_id
    )
    assert moves == [
        {"kind": "reserve", "amount_micros": SYNC_MICROS},
        {"kind": "settle", "amount_micros": SYNC_MICROS},
    ]
    (up,) = fleet.db("SELECT upstream_task_id FROM upstream_tasks WHERE task_id = :t", t=task_id)
    assert up["upstream_task_id"] == next(iter(fake.tasks))


def test_killed_after_kling_made_the_task_before_its_answer_arrived(
    fleet: KlingFleet, fake: FakeKling, media_server: MediaServer
) -> None:
    fake.hold_submits.set()  # Kling creates the task; its answer waits
    client, task_id = start_sync(fleet, media_server)
    wait_for("the upstream task", lambda: fake.submits_created == 1)
    fleet.kill_worker()
    fake.release_submits()  # the answer goes to a dead socket
    # lipdub recorded only its intent to submit: only Kling knows the task.
    (intent,) = fleet.db(
        "SELECT status, upstream_task_id FROM upstream_tasks WHERE task_id = :t", t=task_id
    )
    assert intent == {"status": "submitting", "upstream_task_id": None}
    fleet.start_worker()
    assert_done_once(fleet, fake, client, task_id)
    # The second attempt looked the task up by its external_task_id.
    assert any(m == "GET" and p == SUBMIT_PATH for m, p, _, _ in fake.seen)


def test_killed_while_kling_works_resumes_from_the_record(
    fleet: KlingFleet, fake: FakeKling, media_server: MediaServer
) -> None:
    fake.done_after_s = 4.0
    client, task_id = start_sync(fleet, media_server)
    wait_for(
        "the recorded upstream task",
        lambda: fleet.db(
            "SELECT 1 FROM upstream_tasks WHERE task_id = :t AND upstream_task_id IS NOT NULL",
            t=task_id,
        ),
    )
    fleet.kill_worker()
    fleet.start_worker()
    assert_done_once(fleet, fake, client, task_id)
    # The record was enough: Kling's task list was never searched.
    assert not any(m == "GET" and p == SUBMIT_PATH for m, p, _, _ in fake.seen)

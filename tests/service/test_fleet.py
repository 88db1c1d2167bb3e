"""The fleet under faults (issue 9): API + 3 worker processes with separate scratch
directories on PostgreSQL + S3 (moto), real engine, tasks of both models; workers
SIGKILLed and SIGSTOPped, database connections cut, storage briefly unreachable.

Asserts: every task ends; each is charged once or refunded; every callback is delivered
(at least once, the same webhook-id on every copy); every result decodes.

``make test`` runs the short version (10 tasks, each fault at least once, ~45 s). The long
version is ``LIPDUB_FLEET_TASKS=200 .venv/bin/pytest -s tests/service/test_fleet.py -k
fleet_soak_long`` (faults at random every 3-8 s; figures in docs/benchmarks.md).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image
from sqlalchemy import create_engine, select

from lipdub.service.models import IDENTIFY, SYNC
from lipdub.service.store import tables as t

from .faults import S3Server
from .fleet_kit import Fleet
from .helpers import GEN, MediaServer, Receiver

VIDEO = "videoretalking__face_5.mp4"
SPEECH = "videoretalking__audio_1.wav"
LEASE_S = 4
FLEET_ENV = {
    "LIPDUB_LEASE_S": str(LEASE_S),
    "LIPDUB_HEARTBEAT_S": "1",
    "LIPDUB_MAX_ATTEMPTS": "8",
    "LIPDUB_CALLBACK_TIME_SCALE": "0.02",
}


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def task_row(db_url: str, task_id: str) -> Any:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(t.tasks).where(t.tasks.c.id == task_id)).mappings().one()
    finally:
        engine.dispose()


def test_a_paused_attempt_past_its_lease_publishes_nothing(
    tmp_path: Path, pg_url: str, s3_server: S3Server, media_server: MediaServer
) -> None:
    """Defect 1: a worker paused past its lease kept its engine running while another
    took the task over; both wrote the same files, the retried identify deleted the
    session of the run still going, and the result did not decode. Now each attempt has
    its own keys and scratch, and only the lease owner publishes."""
    fleet = Fleet(tmp_path, pg_url, s3_server, FLEET_ENV).start()
    try:
        fleet.start_worker(1)
        key = fleet.api.new_key("pause", "1")
        with fleet.api.client(key) as api:
            r = api.post(GEN, json={"model": IDENTIFY, "video_url": media_server.url(VIDEO)})
            tid = r.json()["data"]["taskId"]
            pid1 = str(fleet.workers[1].pid)
            wait_for(lambda: f":{pid1}:" in str(task_row(pg_url, tid)["lease_owner"]), 30,
                     "worker 1 to claim the task")
            fleet.signal(1, signal.SIGSTOP)  # its engine child runs on, as in the report
            time.sleep(LEASE_S + 1.5)
            fleet.start_worker(2)
            data = wait_for(lambda: _final(api, tid), 90, "worker 2 to finish the task")
            fleet.signal(1, signal.SIGCONT)
            wait_for(lambda: "superseded" in fleet.log(1), 30, "worker 1 to stand down")
            assert data["state"] == "completed", data
            row = task_row(pg_url, tid)
            assert row["attempts"] == 2
            winner = json.loads(row["result_json"])["faces"][0]["thumbnail_key"].split("/")[3]
            attempts = {k.split("/")[3] for k in _keys(s3_server, fleet.bucket, tid)}
            assert attempts == {winner}, attempts  # the paused attempt left nothing
            for face in data["faceData"]["face_list"]:
                Image.open(io.BytesIO(httpx.get(face["face_reference"]).content)).verify()
            leftovers = [p for p in (fleet.worker_dir(1) / "scratch").rglob("*") if p.is_file()]
            assert leftovers == [], leftovers
    finally:
        fleet.stop()


def _keys(s3: S3Server, bucket: str, tid: str) -> list[str]:
    page = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"media/tasks/{tid}/attempts/")
    return [o["Key"][len("media/"):] for o in page.get("Contents", [])]


def _final(api: httpx.Client, tid: str) -> dict[str, Any] | None:
    try:
        r = api.get(GEN, params={"task_id": tid})
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    data: dict[str, Any] = r.json()["data"]
    return data if data["state"] in ("completed", "failed") else None


class Chaos:
    """Faults on a schedule: each kind at least once early, then at random."""

    KINDS = ("sigstop", "sigkill", "db_cut", "s3_outage")

    def __init__(self, fleet: Fleet, seed: int, every_s: tuple[float, float]) -> None:
        self.fleet = fleet
        self.rng = random.Random(seed)
        self.every_s = every_s
        self.done: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Chaos:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)

    def covered(self) -> bool:
        """Has every kind of fault struck at least once?"""
        return {f.split("@")[0] for f in self.done} >= set(self.KINDS)

    def _run(self) -> None:
        queue = list(self.KINDS)
        while not self._stop.wait(self.rng.uniform(*self.every_s)):
            kind = queue.pop(0) if queue else self.rng.choice(self.KINDS)
            worker = self.rng.choice(sorted(self.fleet.workers))
            if kind == "sigstop":
                self.fleet.signal(worker, signal.SIGSTOP)
                self._stop.wait(LEASE_S + self.rng.uniform(0.5, 3))
                self.fleet.signal(worker, signal.SIGCONT)
            elif kind == "sigkill":
                self.fleet.signal(worker, signal.SIGKILL)
                self._stop.wait(1.0)
                self.fleet.start_worker(worker)
            elif kind == "db_cut":
                self.fleet.db_proxy.outage_for(self.rng.uniform(0.5, 2.0)).join()
            else:
                self.fleet.s3_proxy.outage_for(self.rng.uniform(1.0, 3.0)).join()
            self.done.append(f"{kind}@w{worker}")


def run_soak(
    tmp_path: Path, pg_url: str, s3: S3Server, media: MediaServer, receiver: Receiver,
    n_identify: int, n_sync: int, every_s: tuple[float, float], timeout_s: float,
) -> dict[str, Any]:
    fleet = Fleet(tmp_path, pg_url, s3, FLEET_ENV).start()
    codes: list[int] = []
    tasks: dict[str, str] = {}  # task id -> model
    owners: dict[str, str] = {}  # task id -> account
    try:
        for i in (1, 2, 3):
            fleet.start_worker(i)
        keys = {a: fleet.api.new_key(a, "100") for a in ("soak-a", "soak-b")}
        for a in keys:  # signed callbacks: they carry the webhook-id
            assert fleet.api.cli("account", "webhook-secret", a).returncode == 0
        clients = {a: fleet.api.client(k) for a, k in keys.items()}
        chaos = Chaos(fleet, seed=n_identify, every_s=every_s).start()
        started = time.monotonic()

        def submit(account: str, body: dict[str, Any], ext: str) -> str:
            body = {**body, "callback_url": receiver.url, "external_task_id": ext}
            for _ in range(120):
                try:
                    r = clients[account].post(GEN, json=body)
                except httpx.HTTPError:
                    codes.append(0)
                    time.sleep(0.5)
                    continue
                codes.append(r.status_code)
                if r.status_code == 200:
                    tid: str = r.json()["data"]["taskId"]
                    tasks[tid], owners[tid] = body["model"], account
                    return tid
                assert r.status_code == 503, r.text
                time.sleep(0.5)
            raise AssertionError(f"{ext} was never accepted")

        accounts = sorted(keys)
        identify = [
            submit(accounts[i % 2], {"model": IDENTIFY, "video_url": media.url(VIDEO)}, f"id-{i}")
            for i in range(n_identify)
        ]
        sessions_used: set[str] = set()
        finals: dict[str, dict[str, Any]] = {}
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            for tid in [x for x in tasks if x not in finals]:
                if (data := _final(clients[owners[tid]], tid)) is not None:
                    finals[tid] = data
            for tid in identify:  # lip-sync on sessions as they become available
                data = finals.get(tid)
                if len(sessions_used) < n_sync and data and data["state"] == "completed" \
                        and tid not in sessions_used:
                    face = data["faceData"]["face_list"][0]
                    body = {"model": SYNC, "session_id": data["faceData"]["session_id"],
                            "face_choose": [{"face_id": face["face_id"],
                                             "sound_file": media.url(SPEECH),
                                             "sound_end_time": 1500}]}
                    submit(owners[tid], body, f"sync-{len(sessions_used)}")
                    sessions_used.add(tid)
            if len(sessions_used) >= n_sync and len(finals) == len(tasks):
                if chaos.covered():
                    break
                # A fast machine finished the work before every kind of fault had struck:
                # one more task at a time, so the last faults hit a fleet at work.
                extra = f"extra-{len(tasks)}"
                submit(accounts[len(tasks) % 2],
                       {"model": IDENTIFY, "video_url": media.url(VIDEO)}, extra)
            time.sleep(0.5)
        chaos.stop()
        elapsed = time.monotonic() - started
        missing = [tid for tid in tasks if tid not in finals]
        assert not missing, f"tasks never ended: {missing}"
        return {"fleet": fleet, "tasks": tasks, "finals": finals, "codes": codes,
                "faults": chaos.done, "elapsed_s": elapsed, "clients": clients}
    except BaseException:
        fleet.stop()
        raise


def check_soak(out: dict[str, Any], pg_url: str, receiver: Receiver) -> dict[str, Any]:
    fleet: Fleet = out["fleet"]
    tasks, finals = out["tasks"], out["finals"]
    try:
        assert 500 not in out["codes"], out["codes"]
        # Money: each task reserved once, then settled once or refunded once.
        engine = create_engine(pg_url)
        with engine.connect() as conn:
            ledger = conn.execute(select(t.ledger.c.task_id, t.ledger.c.kind)).all()
            reserved = conn.execute(select(t.accounts.c.reserved_micros)).scalars().all()
        engine.dispose()
        kinds: dict[str, list[str]] = defaultdict(list)
        for task_id, kind in ledger:
            if task_id:
                kinds[task_id].append(kind)
        for tid, data in finals.items():
            expected = ["reserve", "settle" if data["state"] == "completed" else "refund"]
            assert kinds[tid] == expected, (tid, kinds[tid], data)
        assert set(reserved) == {0}
        # Callbacks: every task's, at least once, one webhook-id per task.
        hits = wait_for(lambda: _callbacks_for(receiver, set(tasks)), 60, "every callback")
        for tid, copies in hits.items():
            assert len({h.headers["webhook-id"] for h in copies}) == 1, tid
            assert copies[-1].json()["data"]["state"] == finals[tid]["state"]
        # Results decode.
        for tid, data in finals.items():
            if data["state"] != "completed":
                continue
            if tasks[tid] == SYNC:
                frames = _decode(_fetch(data["resultUrls"][0]))
                assert frames > 0, tid
            else:
                for face in data["faceData"]["face_list"]:
                    Image.open(io.BytesIO(_fetch(face["face_reference"]))).verify()
        failed = {tid: d["failCode"] for tid, d in finals.items() if d["state"] == "failed"}
        assert not set(failed.values()) - {"worker_lost"}, failed  # no task failed by a bug
        return {
            "tasks": len(tasks), "completed": len(finals) - len(failed), "failed": failed,
            "faults": out["faults"], "elapsed_s": round(out["elapsed_s"], 1),
            "callback_copies": sum(len(v) for v in hits.values()),
            "retried_submissions": sum(1 for c in out["codes"] if c != 200),
        }
    finally:
        for c in out["clients"].values():
            c.close()
        fleet.stop()


def _callbacks_for(receiver: Receiver, task_ids: set[str]) -> dict[str, list[Any]] | None:
    by_task: dict[str, list[Any]] = defaultdict(list)
    for h in list(receiver.hits):
        by_task[h.json()["data"]["taskId"]].append(h)
    return by_task if task_ids <= set(by_task) else None


def _fetch(url: str) -> bytes:
    for _ in range(30):  # the storage may be in one of its outages
        r = httpx.get(url, timeout=30)
        if r.status_code == 200:
            return r.content
        time.sleep(0.5)
    raise AssertionError(f"{url}: {r.status_code}")


def _decode(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_fleet_soak_short(
    tmp_path: Path, pg_url: str, s3_server: S3Server, media_server: MediaServer,
    receiver: Receiver,
) -> None:
    out = run_soak(tmp_path, pg_url, s3_server, media_server, receiver,
                   n_identify=6, n_sync=4, every_s=(2.0, 4.0), timeout_s=240)
    summary = check_soak(out, pg_url, receiver)
    print("fleet soak (short):", json.dumps(summary))
    assert {f.split("@")[0] for f in summary["faults"]} == set(Chaos.KINDS), summary


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
@pytest.mark.skipif(
    "LIPDUB_FLEET_TASKS" not in os.environ,
    reason="the long soak (tens of minutes): LIPDUB_FLEET_TASKS=200 pytest -k fleet_soak_long",
)
def test_fleet_soak_long(
    tmp_path: Path, pg_url: str, s3_server: S3Server, media_server: MediaServer,
    receiver: Receiver,
) -> None:
    n = int(os.environ.get("LIPDUB_FLEET_TASKS", "200"))
    out = run_soak(tmp_path, pg_url, s3_server, media_server, receiver,
                   n_identify=n // 2, n_sync=n - n // 2, every_s=(3.0, 8.0), timeout_s=4 * 3600)
    summary = check_soak(out, pg_url, receiver)
    print("fleet soak (long):", json.dumps(summary))

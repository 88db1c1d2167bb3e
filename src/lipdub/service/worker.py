"""Workers: claim tasks under a lease, run the engine, record the outcome.

A worker slot claims the oldest runnable task, renews its lease with a heartbeat while
the engine runs (in a child process), and finishes the task in one transaction that also
moves the money and queues the callback. If the process dies, its leases lapse and any
worker, in this process or another machine, claims the task again (up to
``max_attempts``). The same class runs embedded in ``lipdub serve`` and alone in
``lipdub worker``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from lipdub.service.context import Context
from lipdub.service.db import now_ms
from lipdub.service.engine import Engine, JobFailed, SubprocessEngine
from lipdub.service.payloads import IDENTIFY, callback_body_for_failure, callback_body_for_success
from lipdub.service.store import Row
from lipdub.service.webhooks import CallbackDispatcher

log = logging.getLogger("lipdub.worker")
DISK_FULL_MSG = (
    "The server ran low on disk space while running the task; it was stopped and "
    "refunded: resubmit it later."
)


class Worker:
    def __init__(self, ctx: Context, engine: Engine | None = None, slots: int | None = None):
        self.ctx = ctx
        self.engine: Engine = engine or SubprocessEngine()
        self.slots = ctx.settings.workers if slots is None else slots
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.dispatcher = CallbackDispatcher(ctx)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, threading.Event] = {}

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.slots):
            th = threading.Thread(target=self._slot_loop, name=f"worker-{i}", daemon=True)
            th.start()
            self._threads.append(th)
        janitor = threading.Thread(target=self._janitor_loop, name="janitor", daemon=True)
        janitor.start()
        self._threads.append(janitor)
        self.dispatcher.start()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, task_id: str) -> None:
        """Stop the engine of a task this process runs (the store already failed it);
        a worker in another process notices at its next heartbeat instead."""
        running = self._running.get(task_id)
        if running is not None:
            running.set()
        self.dispatcher.wake()  # the cancellation queued a callback

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for cancel in list(self._running.values()):
            cancel.set()
        for th in self._threads:
            th.join(timeout)
        self.dispatcher.stop()

    # --- task loop -----------------------------------------------------------------

    def _slot_loop(self) -> None:
        s = self.ctx.settings
        while not self._stop.is_set():
            if self.ctx.disk.low():  # logged once by the guard; the task waits its turn
                self._stop.wait(s.poll_s * 5)
                continue
            try:
                row = self.ctx.store.claim(self.name, int(s.lease_s * 1000), s.max_attempts)
            except Exception:
                log.exception("claiming a task failed")
                self._stop.wait(1.0)
                continue
            if row is None:
                self._wake.wait(s.poll_s)
                self._wake.clear()
                continue
            self.dispatcher.wake()  # a task the claimer failed may have queued a callback
            try:
                self.run_task(row)
            except Exception:
                log.exception("task %s: unexpected error", row["id"])
            self.dispatcher.wake()

    def run_task(self, row: Row) -> None:
        task_id, owner = str(row["id"]), str(row["lease_owner"])
        cancel = threading.Event()
        self._running[task_id] = cancel
        # stop() sets _stop, then cancels what is in _running: a task claimed just before
        # stop() but registered just after it would otherwise run on, unseen.
        if self._stop.is_set():
            cancel.set()
        progress = {"value": float(row["progress"] or 0.0)}
        disk_low = threading.Event()
        hb = threading.Thread(
            target=self._heartbeat, args=(task_id, owner, progress, cancel, disk_low), daemon=True
        )
        hb.start()
        try:
            try:
                spec = self._spec(row)
                out = self.engine.run(spec, lambda f: progress.__setitem__("value", f), cancel)
                if cancel.is_set():
                    self._cancelled(row, owner, disk_low)
                    return
                self._complete(row, owner, out)
            except JobFailed as e:
                if cancel.is_set():
                    self._cancelled(row, owner, disk_low)
                    return
                self._fail(row, owner, e.code, e.message)
            except Exception as e:
                # A bug on our side, not the engine's: fail now (and refund) rather than
                # let the lease lapse and repeat the same error max_attempts times.
                log.exception("task %s: internal error", task_id)
                self._fail(
                    row,
                    owner,
                    "internal_error",
                    f"The service failed while running the task ({type(e).__name__}): "
                    "resubmit it, and report it if it repeats.",
                )
        finally:
            cancel.set()
            self._running.pop(task_id, None)
            hb.join()

    def _fail(self, row: Row, owner: str, code: str, message: str) -> None:
        self._discard_outputs(row)
        done = now_ms()
        body = callback_body_for_failure(row, code, message, done)
        self.ctx.store.fail(str(row["id"]), owner, code, message, done, body)

    def _discard_outputs(self, row: Row) -> None:
        """A failed task leaves no half-written session or video behind."""
        base = f"tasks/{row['id']}"
        if row["model"] == IDENTIFY:
            self.ctx.storage.delete_prefix(f"{base}/session")
        else:
            for name in ("result.partial.mp4", "result.mp4"):
                self.ctx.storage.delete_prefix(f"{base}/{name}")

    def _cancelled(self, row: Row, owner: str, disk_low: threading.Event) -> None:
        if disk_low.is_set() and not self._stop.is_set():
            self._fail(row, owner, "disk_full", DISK_FULL_MSG)
        else:
            self._give_back(str(row["id"]), owner)

    def _give_back(self, task_id: str, owner: str) -> None:
        # Cancelled: either our lease was lost (the new owner records the outcome and this
        # release matches nothing) or we are shutting down (requeue the task now).
        if self._stop.is_set():
            self.ctx.store.release(task_id, owner)

    def _heartbeat(
        self,
        task_id: str,
        owner: str,
        progress: dict[str, float],
        cancel: threading.Event,
        disk_low: threading.Event,
    ) -> None:
        s = self.ctx.settings
        lease_ms = int(s.lease_s * 1000)
        last_beat, last_progress = time.monotonic(), progress["value"]
        while not cancel.wait(0.5):
            if self.ctx.disk.low():
                # Stop writing now: the engine's output would only fill the disk that the
                # database and every other account need. run_task fails and refunds it.
                disk_low.set()
                cancel.set()
                return
            now = time.monotonic()
            moved = abs(progress["value"] - last_progress) >= 0.02
            if now - last_beat < s.heartbeat_s and not moved:
                continue
            try:
                mine = self.ctx.store.heartbeat(task_id, owner, lease_ms, progress["value"])
            except Exception:
                log.exception("heartbeat of %s failed", task_id)
                continue
            last_beat, last_progress = now, progress["value"]
            if not mine:
                log.warning("task %s: lease lost, stopping its engine", task_id)
                cancel.set()

    # --- engine specs and results ----------------------------------------------------

    def _spec(self, row: Row) -> dict[str, Any]:
        st = self.ctx.storage
        job = json.loads(row["job_json"])
        base = f"tasks/{row['id']}"
        if row["model"] == IDENTIFY:
            # A retried attempt starts from a clean session directory.
            st.delete_prefix(f"{base}/session")
            return {
                "kind": "identify",
                "video": str(st.path(job["video_key"])),
                "out_dir": str(st.path(f"{base}/session")),
                "log": str(st.path(f"{base}/engine.log")),
            }
        session_dir = st.path(job["session_dir_key"])
        if not (session_dir / "session.json").is_file():
            raise JobFailed(
                "session_expired",
                f"Session {job['session_id']} is no longer stored: identify the video again.",
            )
        return {
            "kind": "sync",
            "video": str(st.path(job["video_key"])),
            "session_dir": str(session_dir),
            "faces": [{**f, "audio": str(st.path(f["audio_key"]))} for f in job["faces"]],
            "original_volume": job["original_volume"],
            "out_path": str(st.path(f"{base}/result.mp4")),
            "log": str(st.path(f"{base}/engine.log")),
        }

    def _key(self, path: str) -> str:
        return str(os.path.relpath(os.path.realpath(path), self.ctx.storage.root))

    def _complete(self, row: Row, owner: str, out: dict[str, Any]) -> None:
        done = now_ms()
        session = None
        if row["model"] == IDENTIFY:
            result: dict[str, Any] = {
                "session_id": out["session_id"],
                "faces": [
                    {
                        "face_id": f["face_id"],
                        "start_time": f["start_time"],
                        "end_time": f["end_time"],
                        "thumbnail_key": self._key(f["thumbnail"]),
                    }
                    for f in out["faces"]
                ],
            }
            job = json.loads(row["job_json"])
            session = {
                "session_id": out["session_id"],
                "account": row["account"],
                "task_id": row["id"],
                "video_key": job["video_key"],
                "dir_key": self._key(out["session_dir"]),
                "duration_ms": int(out["video"]["duration_ms"]),
                "faces_json": json.dumps(
                    [
                        {k: f[k] for k in ("face_id", "start_time", "end_time", "segments")}
                        for f in out["faces"]
                    ]
                ),
                "create_ms": done,
                "expires_ms": done + self.ctx.settings.session_ttl_s * 1000,
            }
        else:
            result = {
                "result_key": self._key(out["path"]),
                "videoDuration": round(out["duration_ms"] / 1000, 3),
                "duration_ms": out["duration_ms"],
                "frame_count": out["frame_count"],
            }
        body = callback_body_for_success(row, result, self.ctx.storage, done, self.ctx.retention_ms)
        if not self.ctx.store.complete(row["id"], owner, result, done, body, session):
            log.warning("task %s finished after its lease was lost; result dropped", row["id"])

    # --- retention -----------------------------------------------------------------

    def _janitor_loop(self) -> None:
        while not self._stop.wait(min(self.ctx.settings.janitor_interval_s, 3600)):
            try:
                self.purge_expired()
            except Exception:
                log.exception("janitor failed")

    def purge_expired(self) -> int:
        """Delete files of tasks completed longer ago than the retention; returns count."""
        cutoff = now_ms() - self.ctx.retention_ms
        n = 0
        while rows := self.ctx.store.tasks_to_purge(cutoff):
            for r in rows:
                self.ctx.storage.delete_prefix(f"tasks/{r['id']}")
                self.ctx.store.mark_purged(r["id"])
                n += 1
        while keys := self.ctx.store.uploads_to_delete(now_ms()):
            for key in keys:
                self.ctx.storage.delete_prefix(key)
                self.ctx.store.mark_upload_deleted(key)
        # Leftovers without a row (an upload cut off by a crash) go by their age.
        uploads = self.ctx.storage.root / "uploads"
        if uploads.is_dir():
            for d in uploads.iterdir():
                if d.stat().st_mtime * 1000 < now_ms() - self.ctx.settings.session_ttl_s * 1000:
                    self.ctx.storage.delete_prefix(f"uploads/{d.name}")
        return n

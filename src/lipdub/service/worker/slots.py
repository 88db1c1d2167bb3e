"""Workers: claim tasks under a lease, run the engine, record the outcome.

A worker slot claims a task, which starts a new *attempt* with an id of its own. The
attempt copies its inputs from storage into a private scratch directory, runs the engine
there (in a child process) while a heartbeat renews the lease, uploads its outputs under
its own keys (``tasks/<id>/attempts/<attempt id>/...``) and finishes the task in one
transaction that also moves the money and queues the callback. That transaction is
fenced by the lease: it names the attempt's keys as the result only if the attempt still
owns the task, so the commit is the publication, and an attempt that lost its lease
(paused past it, cut off) deletes its keys and scratch instead: two runs of one task
never write the same file. The heartbeat also watches the engine: no progress for
``stall_s`` or a run past the model's limit stops it (failed and refunded).

If the process dies, its leases lapse and any worker, in this process or another
machine, claims the task again (up to ``max_attempts``). The same class runs embedded in
``lipdub serve`` and alone in ``lipdub worker``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid

from lipdub.service.callbacks.payloads import callback_body_for_failure, callback_body_for_success
from lipdub.service.callbacks.sender import CallbackDispatcher
from lipdub.service.context import Context
from lipdub.service.retry import BurstLog, retry_transient
from lipdub.service.storage import StorageUnavailable
from lipdub.service.store import DB_RETRY_S, Row
from lipdub.service.worker.attempt import STORAGE_RETRY_S, Attempt
from lipdub.service.worker.protocol import Job, Output
from lipdub.service.worker.runner import EngineRunner, JobFailed, SubprocessEngine
from lipdub.service.worker.upstream_engine import upstream_engine, upstream_problem
from lipdub.service.worker.wakeup import TaskListener
from lipdub.service.worker.warm import WarmEngine

log = logging.getLogger("lipdub.worker")
DISK_FULL_MSG = (
    "The server ran low on disk space while running the task; it was stopped and "
    "refunded: resubmit it later."
)
# Idle poll when LISTEN/NOTIFY wakes the slots.
LISTENING_POLL_S = 2.0


def _default_engine(ctx: Context) -> EngineRunner:
    s = ctx.settings
    if s.engine_start == "cold":
        return SubprocessEngine(memory_mb=s.engine_memory_mb)
    return WarmEngine(memory_mb=s.engine_memory_mb)


class Worker:
    """The slots of one process (and its janitor and callback sender): ``start``, ``wake``
    when a task is queued here, ``cancel`` a task this process runs, ``stop``."""

    def __init__(
        self, ctx: Context, engine: EngineRunner | None = None, slots: int | None = None
    ):
        self.ctx = ctx
        self.engine: EngineRunner = engine or _default_engine(ctx)
        self.slots = ctx.settings.workers if slots is None else slots
        self.name = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Attempts of this process work under scratch/<pid>-<id>; see _clear_dead_scratch.
        self.scratch = ctx.scratch / f"w{os.getpid()}-{self.name.rsplit(':', 1)[-1]}"
        self.dispatcher = CallbackDispatcher(ctx)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, threading.Event] = {}
        # Engines on someone else's cloud (config.ENGINES but "local"), made when needed.
        self._upstream: dict[str, EngineRunner] = {}
        self._claim_errors = BurstLog(log, "claiming tasks")
        self._heartbeat_errors = BurstLog(log, "renewing leases")
        self._janitor_errors = BurstLog(log, "janitor")
        url = ctx.store.engines.write.url.render_as_string(hide_password=False)
        self._listener = TaskListener(url, self.wake) if TaskListener.applies(url) else None

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._clear_dead_scratch()
        self._warn_unconfigured_engine()
        if (
            self.slots
            and isinstance(self.engine, WarmEngine)
            and self.ctx.settings.default_engine == "local"
        ):
            # Load the engine while the slots look for work. A worker whose tasks go to
            # another engine by default starts it at its first local task instead.
            self.engine.start()
        for i in range(self.slots):
            th = threading.Thread(target=self._slot_loop, name=f"worker-{i}", daemon=True)
            th.start()
            self._threads.append(th)
        janitor = threading.Thread(target=self._janitor_loop, name="janitor", daemon=True)
        janitor.start()
        self._threads.append(janitor)
        self.dispatcher.start()
        if self._listener is not None and self.slots:
            self._listener.start()

    def _warn_unconfigured_engine(self) -> None:
        """Said once at start, not first at the first task it fails (and refunds)."""
        s = self.ctx.settings
        if s.default_engine != "local" and self.slots:
            problem = upstream_problem(s.default_engine, self.ctx)
            if problem is not None:
                log.warning(
                    "LIPDUB_DEFAULT_ENGINE=%s, but %s: its tasks will fail (refunded) until "
                    "it is set (docs/kling-engine.md)", s.default_engine, problem,
                )

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
        if self._listener is not None:
            self._listener.stop()
        for th in self._threads:
            th.join(timeout)
        if isinstance(self.engine, WarmEngine):
            self.engine.close()
        self.dispatcher.stop()

    def _clear_dead_scratch(self) -> None:
        """Scratch left by a worker process of this machine that was killed (SIGKILL
        runs no cleanup): its attempts have lapsed and run elsewhere."""
        for d in self.ctx.scratch.glob("w*-*"):
            try:
                pid = int(d.name[1:].split("-", 1)[0])
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(d, ignore_errors=True)
            except (ValueError, PermissionError):
                continue

    # --- task loop -----------------------------------------------------------------

    def _slot_loop(self) -> None:
        s = self.ctx.settings
        while not self._stop.is_set():
            if self.ctx.disk.low():  # logged once by the guard; the task waits its turn
                self._stop.wait(s.poll_s * 5)
                continue
            try:
                row = self.ctx.store.claim(self.name, int(s.lease_s * 1000), s.max_attempts)
                self._claim_errors.ok()
            except Exception as e:
                self._claim_errors.failed(e)
                self._stop.wait(min(5.0, 0.5 * 2 ** min(self._claim_errors.failures, 4)))
                continue
            if row is None:
                # Notified of new tasks, the poll is only the safety net (and what finds
                # lapsed leases): every idle slot of the fleet need not query 5 times/s.
                idle = s.poll_s if self._listener is None else max(s.poll_s, LISTENING_POLL_S)
                self._wake.wait(idle)
                self._wake.clear()
                continue
            self.dispatcher.wake()  # a task the claimer failed may have queued a callback
            try:
                self.run_task(row)
            except Exception:
                log.exception("task %s: unexpected error", row["id"])
            self.dispatcher.wake()

    def run_task(self, row: Row) -> None:
        owner = str(row["lease_owner"])
        a = Attempt(row, owner, self.scratch / f"{row['id']}.{owner.rsplit('#', 1)[-1]}")
        a.progress = float(row["progress"] or 0.0)
        self._running[a.task_id] = a.cancel
        # stop() sets _stop, then cancels what is in _running: a task claimed just before
        # stop() but registered just after it would otherwise run on, unseen.
        if self._stop.is_set():
            a.cancel.set()
        waited = (int(row["start_ms"] or 0) - int(row["create_ms"])) if row["start_ms"] else 0
        log.info(
            "task %s: claimed (%s, attempt %s, worker %s; first claimed %d ms after submission)",
            a.task_id, row["model"], a.attempt_id, self.name, waited,
        )
        hb = threading.Thread(target=self._heartbeat, args=(a,), daemon=True)
        hb.start()
        outcome = "given back"
        try:
            outcome = self._attempt(a, hb)
        finally:
            a.finishing.set()
            a.cancel.set()
            self._running.pop(a.task_id, None)
            hb.join()
            shutil.rmtree(a.scratch, ignore_errors=True)
            log.info(
                "task %s: %s in %.1f s (attempt %s, worker %s)",
                a.task_id, outcome, time.monotonic() - a.started, a.attempt_id, self.name,
            )

    def _attempt(self, a: Attempt, hb: threading.Thread) -> str:
        """Run the attempt to its end; returns what happened, for the log line."""
        try:
            try:
                engine, job = self._engine_and_job(a)
                out = engine.run(job, a.report, a.cancel)
                if a.cancel.is_set():
                    return self._stopped(a)
                return self._complete(a, out, hb)
            except JobFailed as e:
                if a.cancel.is_set():
                    return self._stopped(a)
                return self._fail(a, e.code, e.message)
            except StorageUnavailable:
                log.warning("task %s: storage unreachable for %g s", a.task_id, STORAGE_RETRY_S)
                return self._fail(
                    a, "storage_unavailable",
                    "The media storage was unreachable while running the task; it was "
                    "refunded: resubmit it.",
                )
            except Exception as e:
                # A bug on our side, not the engine's: fail now (and refund) rather than
                # let the lease lapse and repeat the same error max_attempts times.
                log.exception("task %s: internal error", a.task_id)
                return self._fail(
                    a,
                    "internal_error",
                    f"The service failed while running the task ({type(e).__name__}): "
                    "resubmit it, and report it if it repeats.",
                )
        except BaseException:
            self._discard(a)
            raise

    def _engine_and_job(self, a: Attempt) -> tuple[EngineRunner, Job]:
        """The engine the task was submitted to, and its job (inputs in scratch)."""
        name = a.row.get("engine") or "local"
        if name == "local":
            return self.engine, a.job(self.ctx.storage)
        engine = self._upstream.get(name)
        if engine is None:
            engine = self._upstream[name] = upstream_engine(name, self.ctx)
        link_ttl_ms = self.ctx.settings.session_ttl_s * 1000
        return engine, a.upstream_job(self.ctx.storage, link_ttl_ms, self.ctx.store.db_now())

    def _fail(self, a: Attempt, code: str, message: str) -> str:
        self._discard(a)
        a.finishing.set()
        mine = self.ctx.store.fail(
            a.task_id, a.owner, code, message, None,
            lambda done: callback_body_for_failure(a.row, code, message, done),
        )
        return f"failed ({code})" if mine else "superseded (another attempt owns it)"

    def _discard(self, a: Attempt) -> None:
        """Nothing of an attempt that did not publish stays in storage."""
        try:
            a.discard(self.ctx.storage)
        except Exception as e:  # left for the retention purge of tasks/<id>/
            log.warning("task %s: could not delete %s: %s", a.task_id, a.prefix, e)

    def _stopped(self, a: Attempt) -> str:
        """The engine was stopped: say why (or give the task back on shutdown)."""
        reason = a.stopped_for
        limit = self.ctx.settings.max_run_s(str(a.row["model"]))
        if reason == "disk_full" and not self._stop.is_set():
            return self._fail(a, "disk_full", DISK_FULL_MSG)
        if reason == "timeout":
            return self._fail(
                a, "timeout",
                f"The task ran longer than the {limit:g} s allowed for its model and was "
                "stopped; it was refunded.",
            )
        if reason == "engine_stalled":
            return self._fail(
                a, "engine_stalled",
                f"The engine made no progress for {self.ctx.settings.stall_s:g} s and was "
                "stopped; the task was refunded: resubmit it.",
            )
        self._discard(a)
        if reason == "lost":
            return "superseded (lease lost, engine stopped)"
        # Shutting down: requeue the task now rather than after its lease lapses.
        self.ctx.store.release(a.task_id, a.owner)
        return "given back (shutdown)"

    def _heartbeat(self, a: Attempt) -> None:
        s = self.ctx.settings
        lease_ms = int(s.lease_s * 1000)
        limit = s.max_run_s(str(a.row["model"]))
        last_beat, last_progress = time.monotonic(), a.progress
        # Woken often, written seldom: a move of 2 % reaches the database within 0.1 s (a
        # short sync's render can go from start to end between two 0.5 s looks, and its
        # client saw 0 then 1), and otherwise a beat every heartbeat_s.
        while not a.cancel.wait(0.1) and not a.finishing.is_set():
            now = time.monotonic()
            stop_for = None
            if self.ctx.disk.low():
                # Stop writing now: the engine's output would only fill the disk that the
                # database and every other account need. The attempt fails and refunds.
                stop_for = "disk_full"
            elif now - a.started > limit:
                stop_for = "timeout"
            elif now - a.progress_at > s.stall_s:
                # The lease used to be renewed whatever the engine did: a hung engine
                # held its task for ever. Progress is the sign of life.
                stop_for = "engine_stalled"
            if stop_for is not None:
                log.warning("task %s: stopping its engine (%s)", a.task_id, stop_for)
                a.stopped_for = stop_for
                a.cancel.set()
                return
            moved = abs(a.progress - last_progress) >= 0.02
            if now - last_beat < s.heartbeat_s and not moved:
                continue
            try:
                mine = self.ctx.store.heartbeat(a.task_id, a.owner, lease_ms, a.progress)
                self._heartbeat_errors.ok()
            except Exception as e:
                self._heartbeat_errors.failed(e)
                continue
            last_beat, last_progress = now, a.progress
            if not mine and not a.finishing.is_set():
                log.warning("task %s: lease lost, stopping its engine", a.task_id)
                a.stopped_for = "lost"
                a.cancel.set()

    def _complete(self, a: Attempt, out: Output, hb: threading.Thread) -> str:
        s = self.ctx.settings
        # Uploading is wasted if another attempt already owns the task.
        still_mine = retry_transient(
            lambda: self.ctx.store.heartbeat(a.task_id, a.owner, int(s.lease_s * 1000), 1.0),
            f"task {a.task_id}: lease check", DB_RETRY_S,
        )
        if not still_mine:
            self._discard(a)
            return "superseded (lease lost before upload)"
        result, session = a.publishable(self.ctx.storage, out)
        # The heartbeat stops before the commit: after it, the task is no longer ours to
        # renew, and its "lease lost" would be a false alarm (12 of 240 completions).
        a.finishing.set()
        hb.join()
        mine = self.ctx.store.complete(
            a.task_id, a.owner, result, None,
            lambda done: callback_body_for_success(
                a.row, result, self.ctx.storage, done, self.ctx.retention_ms
            ),
            session,
            session_ttl_ms=s.session_ttl_s * 1000,
        )
        if not mine:
            self._discard(a)
            return "superseded (finished after its lease was lost; output discarded)"
        self._drop_other_attempts(a)
        return "completed"

    def _drop_other_attempts(self, a: Attempt) -> None:
        """Outputs of earlier attempts that died mid-upload (SIGKILL runs no cleanup)."""
        base = f"tasks/{a.task_id}/attempts"
        try:
            others = {
                k[len(base) + 1 :].split("/", 1)[0] for k, _ in self.ctx.storage.list_keys(base)
            }
            for attempt_id in others - {a.attempt_id}:
                self.ctx.storage.delete_prefix(f"{base}/{attempt_id}")
        except Exception as e:  # the retention purge removes them later
            log.warning("task %s: could not drop other attempts' outputs: %s", a.task_id, e)
    # --- retention -----------------------------------------------------------------

    def _janitor_loop(self) -> None:
        while not self._stop.wait(min(self.ctx.settings.janitor_interval_s, 3600)):
            try:
                self.purge_expired()
                self._janitor_errors.ok()
            except Exception as e:
                self._janitor_errors.failed(e)

    def purge_expired(self) -> int:
        """Delete files of tasks completed longer ago than the retention; returns count."""
        now = self.ctx.store.db_now()
        cutoff = now - self.ctx.retention_ms
        n = 0
        while rows := self.ctx.store.tasks_to_purge(cutoff):
            for r in rows:
                self.ctx.storage.delete_prefix(f"tasks/{r['id']}")
                self.ctx.store.mark_purged(r["id"])
                n += 1
        while keys := self.ctx.store.uploads_to_delete(now):
            for key in keys:
                self.ctx.storage.delete_prefix(key)
                self.ctx.store.mark_upload_deleted(key)
        # Leftovers without a row (an upload cut off by a crash) go by their age.
        too_old = now - self.ctx.settings.session_ttl_s * 1000
        for key, modified_ms in list(self.ctx.storage.list_keys("uploads")):
            if modified_ms < too_old:
                self.ctx.storage.delete_prefix(key)
        return n

"""The worker's side of the warm fork server (``zygote``): start it, hand it jobs.

``WarmEngine`` is the service's ``EngineRunner``: each ``run`` has the zygote fork a
child that already holds the engine and its models, relays that child's progress and
turns its end into an ``Output`` or a ``JobFailed`` exactly as the cold
``SubprocessEngine`` does (``runner.outcome``). What a task keeps from the cold way:
its own process (a crash, a kill or the memory cap ends that task only), a cancel that
kills it, its death when the worker dies (its stdin is the worker's pipe), its log.

The zygote is started when the worker starts (``start``: in the background, ready
before the first claim on a normal start-up) and again by the next ``run`` if it died:
a dead zygote fails only the tasks it was running, with that said.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from lipdub.media.memory import ALLOCATOR_ENV
from lipdub.service.worker.protocol import Job, Output, encode_job
from lipdub.service.worker.runner import JobFailed, ProgressFn, Watch, outcome, relay

log = logging.getLogger("lipdub.worker")

# Loading the engine takes ~1 s on an idle machine, several on a busy one.
READY_TIMEOUT_S = 300.0
# The zygote answers a job with its child's pid at once (a fork); its exit status as soon
# as it has reaped the child, which has closed its stdout by then.
ANSWER_TIMEOUT_S = 60.0
# Fork safety: the zygote must have no threads, so the thread pools that OpenBLAS (in
# numpy, SciPy and OpenCV) starts when it loads get one thread. The jobs lose nothing:
# identify and sync run BLAS on one thread anyway (media/pools.py).
SINGLE_THREADED_ENV = {"OPENBLAS_NUM_THREADS": "1"}


class ZygoteGone(Exception):
    """The fork server died or refused the job before forking a child for it."""


class ForkServer:
    """One zygote process and the control socket to it; restarted when found dead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ensure(self) -> None:
        with self._lock:
            self._ensure_locked()

    def _ensure_locked(self) -> None:
        if self.alive():
            return
        self._close_locked()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lipdub.service.worker.zygote", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # An operator's own MALLOC_* settings win over ours; thread pools of one
                # are not theirs to change (see SINGLE_THREADED_ENV).
                env={
                    **ALLOCATOR_ENV, **os.environ, "PYTHONUNBUFFERED": "1",
                    **SINGLE_THREADED_ENV,
                },
            )
        finally:
            theirs.close()
        self._proc, self._ctl = proc, ours
        self.starts += 1
        ours.settimeout(READY_TIMEOUT_S)
        try:
            answer = _read(ours)
        except (OSError, ValueError) as e:
            answer = {"error": f"no answer ({e})"}
        ours.settimeout(None)
        if "ready" not in answer:
            self._close_locked()
            raise JobFailed(
                "engine_error",
                f"The engine could not start ({answer.get('error', 'it exited')}): the "
                "server's installation needs attention; resubmit the task later.",
            )
        log.info("engine fork server %d ready (start %d)", proc.pid, self.starts)

    def submit(self, job: Job, fds: list[int]) -> None:
        """Send a job and its descriptors; raises ZygoteGone if it could not be sent."""
        with self._lock:
            self._ensure_locked()
            assert self._ctl is not None
            try:
                socket.send_fds(self._ctl, [encode_job(job).encode()], fds)
            except OSError as e:
                self._close_locked()
                raise ZygoteGone(str(e)) from e

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        """Closing the control socket ends the zygote, which kills its children first."""
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def _read(sock: socket.socket) -> dict[str, Any]:
    data = sock.recv(4096)
    if not data:
        raise ValueError("connection closed")
    msg = json.loads(data)
    if not isinstance(msg, dict):
        raise ValueError(f"unexpected message {msg!r}")
    return msg


class WarmEngine:
    """Runs each job in a child forked from the warm zygote; same results and failures
    as the cold ``SubprocessEngine``, without its start-up."""

    def __init__(self, memory_mb: int = 0) -> None:
        self.memory_mb = memory_mb
        self.server = ForkServer()

    def start(self) -> None:
        """Warm the zygote up in the background (the first ``run`` waits for it)."""
        def warm() -> None:
            try:
                self.server.ensure()
            except JobFailed as e:  # the first run says it again, on its task
                log.error("engine fork server: %s", e.message)

        threading.Thread(target=warm, name="engine-warm-up", daemon=True).start()

    def close(self) -> None:
        self.server.close()

    def run(self, job: Job, progress: ProgressFn, cancel: threading.Event) -> Output:
        try:
            return self._run_once(job, progress, cancel)
        except ZygoteGone as e:
            # Nothing ran yet (no child was forked): one more try on a fresh zygote.
            log.warning("engine fork server lost before forking (%s): restarting it", e)
            try:
                return self._run_once(job, progress, cancel)
            except ZygoteGone as again:
                raise JobFailed(
                    "engine_crashed",
                    f"The engine's fork server failed twice before the task started "
                    f"({again}): resubmit the task, and report it if it repeats.",
                ) from again

    def _run_once(self, job: Job, progress: ProgressFn, cancel: threading.Event) -> Output:
        log_path = Path(job.log)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        task, task_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        try:
            with log_path.open("ab") as log_file:
                try:
                    self.server.submit(
                        job, [task_theirs.fileno(), stdin_r, stdout_w, log_file.fileno()]
                    )
                finally:  # the zygote has its copies; ours would hide the child's end
                    task_theirs.close()
                    os.close(stdin_r)
                    os.close(stdout_w)
            task.settimeout(ANSWER_TIMEOUT_S)
            try:
                pid = int(_read(task)["pid"])
            except (OSError, ValueError, KeyError) as e:
                raise ZygoteGone(f"no child for the job: {e}") from e
            watch = Watch(pid, lambda: _send_kill(task), cancel, self.memory_mb)
            try:
                with os.fdopen(stdout_r, "rb") as stdout:
                    stdout_r = -1
                    final = relay(stdout, job, progress)
                returncode = _exit_code(task)
            finally:
                watch.stop()
        finally:
            task.close()  # if we never read its exit, the zygote kills the child now
            os.close(stdin_w)  # the child's stdin ends: it exits if still running
            if stdout_r >= 0:
                os.close(stdout_r)
        return outcome(final, returncode, watch.cancelled, watch.over_memory_mb)


def _send_kill(task: socket.socket) -> None:
    with contextlib.suppress(OSError):
        task.send(b"kill")


def _exit_code(task: socket.socket) -> int | None:
    """The child's exit as Popen.returncode; None if the zygote died without telling."""
    try:
        return int(_read(task)["exit"])
    except (OSError, ValueError, KeyError):
        return None

"""How a worker runs the real engine: one process per task (see ``child``).

``EngineRunner`` is the narrow interface the worker needs (named apart from
``lipdub.render.engine``, the renderer itself). The production implementations call the
real ``lipdub.identify`` / ``lipdub.sync``: ``warm.WarmEngine`` (the default: each task's
process forked from a fork server that loaded the engine once) and ``SubprocessEngine``
here (a fresh interpreter per task); tests of queue mechanics may pass their own object
with the same ``run`` method. Both turn a process's end into an ``Output`` or a
``JobFailed`` through ``outcome`` and stop it through ``Watch`` (cancel, memory cap).
Jobs and answers are the typed messages of ``protocol``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from lipdub.media.memory import ALLOCATOR_ENV
from lipdub.service.worker.protocol import (
    Failed,
    Job,
    Output,
    Progress,
    Succeeded,
    decode,
    encode_job,
)

ProgressFn = Callable[[float], None]

# Engine exception class name -> failCode on the wire.
FAIL_CODES = {
    "DiskFull": "disk_full",
    "NoFacesError": "no_faces",
    "MediaError": "media_error",
    "LimitError": "limit_exceeded",
    "InputError": "invalid_input",
    "LipdubError": "engine_error",
}


class JobFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EngineRunner(Protocol):
    def run(self, job: Job, progress: ProgressFn, cancel: threading.Event) -> Output: ...


def _how_it_ended(returncode: int | None) -> str:
    if returncode is None:
        return "ended (its fork server stopped)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


def outcome(
    final: Succeeded | Failed | None,
    returncode: int | None,
    cancelled: bool,
    over_memory_mb: int = 0,
) -> Output:
    """The job's output, or the JobFailed that says why there is none.

    ``final`` is the child's last message (None if it died first), ``returncode`` its exit
    as ``Popen.returncode`` (None if unknown), ``cancelled`` whether we stopped it on the
    cancel event, ``over_memory_mb`` the cap it was stopped for exceeding (0: not)."""
    if final is None:
        if over_memory_mb:
            # A deterministic limit, not a crash: the same input would hit it again.
            raise JobFailed(
                "limit_exceeded",
                f"The engine needed more than the {over_memory_mb} MB of memory this "
                "server allows a task and was stopped; try a shorter or smaller video.",
            )
        if cancelled:
            raise JobFailed("cancelled", "The task was cancelled while running.")
        raise JobFailed(
            "engine_crashed",
            f"The engine process {_how_it_ended(returncode)} before finishing: "
            "resubmit the task, and report it if it repeats.",
        )
    if isinstance(final, Succeeded):
        return final.result
    code = FAIL_CODES.get(final.code, "internal_error")
    if code == "internal_error":
        raise JobFailed(
            code,
            f"The engine failed unexpectedly ({final.message[:200]}): resubmit the "
            "task, and report it if it repeats.",
        )
    raise JobFailed(code, final.message)


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE / (1024 * 1024)
    except (OSError, IndexError, ValueError):
        return 0.0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Watch:
    """Stops a running engine process when the task is cancelled or the process grows
    past the memory cap; polled 5 times a second on a thread of its own."""

    def __init__(
        self, pid: int, kill: Callable[[], None], cancel: threading.Event, memory_mb: int
    ) -> None:
        self.pid = pid
        self.kill = kill
        self.cancel = cancel
        self.memory_mb = memory_mb
        self.cancelled = False
        self.over_memory_mb = 0
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"engine-{pid}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.done.is_set():
            if self.cancel.wait(0.2):
                self.cancelled = True
                break
            if self.memory_mb and rss_mb(self.pid) > self.memory_mb:
                self.over_memory_mb = self.memory_mb
                break
        else:
            return
        if not self.done.is_set():
            self.kill()

    def stop(self) -> None:
        self.done.set()
        self._thread.join()


class SubprocessEngine:
    """Runs ``python -m lipdub.service.worker.child`` cold, one interpreter per task (the
    way before the warm ``WarmEngine``; kept for comparison in ``bench/warm_engines.py``)."""

    def __init__(self, memory_mb: int = 0) -> None:
        self.memory_mb = memory_mb

    def run(self, job: Job, progress: ProgressFn, cancel: threading.Event) -> Output:
        log_path = Path(job.log)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lipdub.service.worker.child", encode_job(job)],
                stdin=subprocess.PIPE,  # kept open: its EOF tells the child we died
                stdout=subprocess.PIPE,
                stderr=log,
                # An operator's own MALLOC_* settings win over ours.
                env={**ALLOCATOR_ENV, **os.environ, "PYTHONUNBUFFERED": "1"},
            )
            watch = Watch(proc.pid, proc.kill, cancel, self.memory_mb)
            assert proc.stdout is not None
            final = relay(proc.stdout, job, progress)
            proc.wait()
            watch.stop()
            if proc.stdin:
                proc.stdin.close()
        return outcome(final, proc.returncode, watch.cancelled, watch.over_memory_mb)


def relay(
    lines: Iterable[bytes], job: Job, progress: ProgressFn
) -> Succeeded | Failed | None:
    """Pass the child's progress on until its stdout ends; its final message."""
    final: Succeeded | Failed | None = None
    for line in lines:
        msg = decode(line, job)
        if isinstance(msg, Progress):
            progress(msg.fraction)
        elif msg is not None:
            final = msg
    return final

"""How a worker runs the real engine: one child process per task (see ``child``).

``EngineRunner`` is the narrow interface the worker needs (named apart from
``lipdub.render.engine``, the renderer itself). ``SubprocessEngine`` is the only
production implementation and calls the real ``lipdub.identify`` / ``lipdub.sync``;
tests of queue mechanics may pass their own object with the same ``run`` method. Jobs
and answers are the typed messages of ``protocol``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
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


class SubprocessEngine:
    """Runs ``python -m lipdub.service.worker.child`` and relays its progress lines."""

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
            done = threading.Event()
            killer = threading.Thread(
                target=self._kill_on_cancel, args=(proc, cancel, done), daemon=True
            )
            killer.start()
            final: Succeeded | Failed | None = None
            assert proc.stdout is not None
            for line in proc.stdout:
                msg = decode(line, job)
                if isinstance(msg, Progress):
                    progress(msg.fraction)
                elif msg is not None:
                    final = msg
            proc.wait()
            done.set()
            if proc.stdin:
                proc.stdin.close()
        if final is None:
            if cancel.is_set() and proc.returncode and proc.returncode < 0:
                raise JobFailed("cancelled", "The task was cancelled while running.")
            raise JobFailed(
                "engine_crashed",
                f"The engine process exited with code {proc.returncode} before finishing: "
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

    @staticmethod
    def _kill_on_cancel(
        proc: subprocess.Popen[bytes], cancel: threading.Event, done: threading.Event
    ) -> None:
        while not done.is_set():
            if cancel.wait(0.2):
                if proc.poll() is None:
                    proc.kill()
                return

"""The process that runs one engine call: forked by the warm ``zygote`` (the service's
way), or started cold as ``python -m lipdub.service.worker.child SPEC``.

The engine is CPU-heavy Python; running it in its own process keeps the API's event loop
and the GIL free (the API stays responsive while a worker renders), and a crash or leak
in native code cannot take the service down. The job and the JSON lines it answers on
stdout are the typed messages of ``protocol``. Closing our stdin means the parent died:
we exit at once instead of rendering for nobody.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from lipdub.service.worker.protocol import (
    Failed,
    FoundFace,
    IdentifyJob,
    IdentifyOutput,
    Job,
    Message,
    Progress,
    Succeeded,
    SyncJob,
    SyncOutput,
    decode_job,
    encode,
)

DISK_FULL = "The server's disk filled up while running the task: resubmit it later."


def _exit_when_parent_dies() -> None:
    def watch() -> None:
        sys.stdin.buffer.read()  # returns b"" only when the parent's end closes
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


class _Progress:
    """Reports progress at most a few times per second."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self.last >= 0.25 or fraction >= 1.0:
            self.last = now
            _emit(Progress(max(0.0, min(1.0, float(fraction)))))


def _emit(msg: Message) -> None:
    sys.stdout.write(encode(msg) + "\n")
    sys.stdout.flush()


def run_identify(job: IdentifyJob) -> IdentifyOutput:
    import lipdub
    from lipdub.faces.session import span_json

    out_dir = Path(job.out_dir)
    session = lipdub.identify(Path(job.video), out_dir=out_dir, progress=_Progress())
    if session.directory is None:
        session.save(out_dir)
    directory = session.directory or out_dir
    return IdentifyOutput(
        session_id=session.session_id,
        session_dir=str(directory),
        video=session.video.to_json(),
        faces=[
            FoundFace(
                face_id=f.face_id,
                start_time=f.start_ms,
                end_time=f.end_ms,
                segments=[[int(a), int(b)] for a, b in f.segments],
                thumbnail=str(session.thumbnail_path(f)),
                not_renderable=[span_json(n) for n in f.not_renderable],
            )
            for f in session.faces
        ],
        unusable=[u.to_json() for u in session.unusable],
    )


def run_sync(job: SyncJob) -> SyncOutput:
    _emit(Progress(0.005))  # the engine process is up: the task visibly moves
    import lipdub

    session = lipdub.Session.load(Path(job.session_dir))
    faces = [
        lipdub.FaceAudio(
            face_id=f.face_id,
            audio_path=Path(f.audio),
            start_ms=f.start_ms,
            end_ms=f.end_ms,
            insert_ms=f.insert_ms,
            volume=f.volume,
            sync_mode=f.sync_mode,
        )
        for f in job.faces
    ]
    result = lipdub.sync(
        Path(job.video),
        faces=faces,
        out_path=Path(job.out_path),
        session=session,
        original_volume=job.original_volume,
        progress=_Progress(),
    )
    return SyncOutput(
        path=str(result.path),
        duration_ms=int(result.duration_ms),
        frame_count=int(result.frame_count),
        notes=list(result.notes),
    )


def run_job(job: Job) -> None:
    """Run one job and write its final line (``Succeeded`` or ``Failed``) on stdout."""
    from lipdub.errors import LipdubError

    try:
        result = run_identify(job) if isinstance(job, IdentifyJob) else run_sync(job)
        _emit(Succeeded(result))
    except LipdubError as e:
        # The contract's words first (clients match on them), then what was searched for
        # and what was found but cannot be lip-synced, when identify says so.
        detail = getattr(e, "detail", "")
        _emit(Failed(type(e).__name__, f"{e} ({detail})" if detail else str(e)))
    except Exception as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            _emit(Failed("DiskFull", DISK_FULL))
        else:  # an engine bug: report it as such, with the trace on stderr
            traceback.print_exc()
            _emit(Failed("InternalError", f"{type(e).__name__}: {e}"))


def serve(job: Job) -> None:
    """The engine's life once it runs as a job's process (the cold ``main`` below, or a
    child forked by the warm ``zygote``): watch the parent, run, flush, exit at once.

    os._exit: the stdin watcher thread holds the stdin lock, which a normal interpreter
    shutdown would wait for and then abort with a fatal error; and a forked child must
    never return into its zygote's loop."""
    code = 0
    try:
        _exit_when_parent_dies()
        run_job(job)
    except BaseException:  # noqa: BLE001  (reported by the missing final line)
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str]) -> None:
    # Below the API's priority: on a small machine queries must not wait for renders.
    os.nice(5)
    serve(decode_job(argv[1]))


if __name__ == "__main__":
    main(sys.argv)

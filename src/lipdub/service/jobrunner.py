"""Child process that runs one engine call: ``python -m lipdub.service.jobrunner SPEC``.

The engine is CPU-heavy Python; running it in its own process keeps the API's event loop
and the GIL free (the API stays responsive while a worker renders), and a crash or leak
in native code cannot take the service down. The protocol is JSON lines on stdout:
``{"progress": 0.4}`` while working, then one ``{"ok": true, "result": {...}}`` or
``{"ok": false, "code": ..., "message": ...}``. Closing our stdin means the parent died:
we exit at once instead of rendering for nobody.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

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
            _emit({"progress": max(0.0, min(1.0, float(fraction)))})


def _emit(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def run_identify(spec: dict[str, Any]) -> dict[str, Any]:
    import lipdub

    out_dir = Path(spec["out_dir"])
    session = lipdub.identify(Path(spec["video"]), out_dir=out_dir, progress=_Progress())
    if session.directory is None:
        session.save(out_dir)
    directory = session.directory or out_dir
    return {
        "session_id": session.session_id,
        "session_dir": str(directory),
        "video": session.video.to_json(),
        "faces": [
            {
                "face_id": f.face_id,
                "start_time": f.start_ms,
                "end_time": f.end_ms,
                "segments": [[int(a), int(b)] for a, b in f.segments],
                "thumbnail": str(session.thumbnail_path(f)),
            }
            for f in session.faces
        ],
    }


def run_sync(spec: dict[str, Any]) -> dict[str, Any]:
    _emit({"progress": 0.005})  # the engine process is up: the task visibly moves
    import lipdub

    session = lipdub.Session.load(Path(spec["session_dir"]))
    faces = [
        lipdub.FaceAudio(
            face_id=f["face_id"],
            audio_path=Path(f["audio"]),
            start_ms=f["start_ms"],
            end_ms=f["end_ms"],
            insert_ms=f["insert_ms"],
            volume=f["volume"],
            sync_mode=f.get("sync_mode"),
        )
        for f in spec["faces"]
    ]
    result = lipdub.sync(
        Path(spec["video"]),
        faces=faces,
        out_path=Path(spec["out_path"]),
        session=session,
        original_volume=spec["original_volume"],
        progress=_Progress(),
    )
    return {
        "path": str(result.path),
        "duration_ms": int(result.duration_ms),
        "frame_count": int(result.frame_count),
    }


def main(argv: list[str]) -> int:
    from lipdub.errors import LipdubError

    _exit_when_parent_dies()
    # Below the API's priority: on a small machine queries must not wait for renders.
    os.nice(5)
    spec = json.loads(argv[1])
    try:
        runner = run_identify if spec["kind"] == "identify" else run_sync
        _emit({"ok": True, "result": runner(spec)})
    except LipdubError as e:
        _emit({"ok": False, "code": type(e).__name__, "message": str(e)})
    except Exception as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            _emit({"ok": False, "code": "DiskFull", "message": DISK_FULL})
        else:  # an engine bug: report it as such, with the trace on stderr
            traceback.print_exc()
            _emit({"ok": False, "code": "InternalError", "message": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: the stdin watcher thread holds the stdin lock, which a normal interpreter
    # shutdown would wait for and then abort with a fatal error.
    os._exit(code)

"""What a worker and its engine child process say to each other, typed.

The worker hands the child one ``Job`` (``IdentifyJob`` or ``SyncJob``) as JSON on its
command line; the child answers with JSON lines on stdout: ``Progress`` while working,
then one ``Succeeded`` (carrying an ``IdentifyOutput`` or ``SyncOutput``) or ``Failed``.
Both ends encode and decode through this module only, so a field added on one side is
a type error on the other, not a ``KeyError`` in production. The JSON itself is what the
untyped dicts were (``{"progress": 0.4}``, ``{"ok": true, "result": {...}}``,
``{"ok": false, "code": ..., "message": ...}``): a worker and a child of different
versions still understand each other during a rolling upgrade.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class IdentifyJob:
    video: str
    out_dir: str
    log: str
    kind: Literal["identify"] = "identify"
    # For an engine that runs elsewhere (worker/upstream_engine.py) and reads no local
    # file: the task, and a URL it can fetch the video from (``video`` is then empty).
    # The local engine's child ignores them.
    task_id: str = ""
    video_url: str = ""


@dataclass(frozen=True)
class FaceAudioJob:
    """One chosen face and the speech it gets (times in ms of the video and the audio)."""

    face_id: str
    audio: str
    start_ms: int
    end_ms: int
    insert_ms: int
    volume: float
    sync_mode: str | None = None


@dataclass(frozen=True)
class SyncJob:
    video: str
    session_dir: str
    faces: tuple[FaceAudioJob, ...]
    original_volume: float
    out_path: str
    log: str
    kind: Literal["sync"] = "sync"
    # For an engine that runs elsewhere: the task and the identify session (lipdub's
    # id); ``video`` and ``session_dir`` are then empty. The local child ignores them.
    task_id: str = ""
    session_id: str = ""


Job = IdentifyJob | SyncJob


@dataclass(frozen=True)
class FoundFace:
    face_id: str
    start_time: int
    end_time: int
    segments: list[list[int]]
    thumbnail: str
    # Spans where the face is seen but its mouth is not re-rendered:
    # {"start_time", "end_time", "reason": "turned" | "mouth_covered"}.
    not_renderable: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class IdentifyOutput:
    session_id: str
    session_dir: str
    # The session's VideoInfo as JSON (duration_ms is what the service reads).
    video: dict[str, Any]
    faces: list[FoundFace] = field(default_factory=list)
    # Faces found but left out: {"reason": "too_small" | "too_brief" | "turned",
    # "start_time", "end_time", "size_px"} (faces.session.Unusable).
    unusable: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SyncOutput:
    path: str
    duration_ms: int
    frame_count: int
    # What the engine says about the result: audio cut or looped, frames of a chosen
    # face left as they are (turned head, covered mouth) and why.
    notes: list[str] = field(default_factory=list)


Output = IdentifyOutput | SyncOutput


@dataclass(frozen=True)
class Progress:
    fraction: float


@dataclass(frozen=True)
class Succeeded:
    result: Output


@dataclass(frozen=True)
class Failed:
    """``code`` is the engine exception's class name (``NoFacesError``, ``DiskFull``...);
    the runner maps it to a failCode."""

    code: str
    message: str


Message = Progress | Succeeded | Failed


def encode_job(job: Job) -> str:
    return json.dumps(asdict(job))


def decode_job(text: str) -> Job:
    d = json.loads(text)
    if d.pop("kind") == "identify":
        return IdentifyJob(**d)
    faces = tuple(FaceAudioJob(**f) for f in d.pop("faces"))
    return SyncJob(faces=faces, **d)


def encode(msg: Message) -> str:
    """One line of the child's stdout."""
    if isinstance(msg, Progress):
        return json.dumps({"progress": msg.fraction})
    if isinstance(msg, Succeeded):
        return json.dumps({"ok": True, "result": asdict(msg.result)})
    return json.dumps({"ok": False, "code": msg.code, "message": msg.message})


def decode(line: str | bytes, job: Job) -> Message | None:
    """The message on one line of the child's stdout for ``job``; None for a line that
    is not ours (a library printed to stdout)."""
    try:
        d = json.loads(line)
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    if "progress" in d:
        return Progress(float(d["progress"]))
    if "ok" not in d:
        return None
    if not d["ok"]:
        return Failed(str(d["code"]), str(d["message"]))
    r = d["result"]
    if isinstance(job, IdentifyJob):
        faces = [FoundFace(**f) for f in r.pop("faces")]
        return Succeeded(IdentifyOutput(faces=faces, **r))
    return Succeeded(SyncOutput(**r))

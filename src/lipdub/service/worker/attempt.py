"""One run of one task: its fencing token, its keys, its private scratch directory, and
how its inputs come out of storage (as the engine's typed ``Job``) and its outputs go
back in (as the task's result and, for identify, the session row).

Every storage call here is retried through a storage outage (``STORAGE_RETRY_S``): a
render is not thrown away because the bucket blinked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lipdub.service.models import IDENTIFY
from lipdub.service.retry import retry_transient
from lipdub.service.storage import MissingObject, Storage
from lipdub.service.store import Row
from lipdub.service.worker.protocol import (
    FaceAudioJob,
    IdentifyJob,
    IdentifyOutput,
    Job,
    Output,
    SyncJob,
)
from lipdub.service.worker.runner import JobFailed

T = TypeVar("T")
# Moving inputs and outputs through an unreachable storage service is retried this long.
STORAGE_RETRY_S = 60.0


@dataclass
class Attempt:
    """One run of one task: its fencing token, its keys and its private directory."""

    row: Row
    owner: str
    scratch: Path
    started: float = field(default_factory=time.monotonic)
    progress: float = 0.0
    progress_at: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    finishing: threading.Event = field(default_factory=threading.Event)
    # Why the heartbeat stopped the engine: disk_full | timeout | engine_stalled | lost
    stopped_for: str | None = None

    @property
    def task_id(self) -> str:
        return str(self.row["id"])

    @property
    def attempt_id(self) -> str:
        return self.owner.rsplit("#", 1)[-1]

    @property
    def prefix(self) -> str:
        """Storage keys of this attempt's outputs."""
        return f"tasks/{self.task_id}/attempts/{self.attempt_id}"

    def report(self, fraction: float) -> None:
        if fraction != self.progress:
            self.progress, self.progress_at = fraction, time.monotonic()

    # --- storage ---------------------------------------------------------------------

    def retried(self, fn: Callable[[], T], what: str) -> T:
        return retry_transient(fn, f"task {self.task_id}: storage {what}", STORAGE_RETRY_S)

    def fetch(self, storage: Storage, key: str, dest: Path) -> Path:
        try:
            self.retried(lambda: storage.get_file(key, dest), "download")
        except MissingObject:
            raise JobFailed(
                "media_error", "An input of this task is no longer stored: resubmit the task."
            ) from None
        return dest

    def discard(self, storage: Storage) -> None:
        """Delete every output of this attempt (one that did not publish)."""
        self.retried(lambda: storage.delete_prefix(self.prefix), "discard")

    # --- inputs ----------------------------------------------------------------------

    def job(self, storage: Storage) -> Job:
        """Copy the inputs into scratch; the engine's job that reads them."""
        job = json.loads(self.row["job_json"])
        inputs = self.scratch / "in"
        out = self.scratch / "out"
        out.mkdir(parents=True, exist_ok=True)
        video = str(self.fetch(storage, job["video_key"], inputs / "video"))
        log_path = str(self.scratch / "engine.log")
        if self.row["model"] == IDENTIFY:
            return IdentifyJob(video=video, out_dir=str(out / "session"), log=log_path)
        session_dir = inputs / "session"
        n = self.retried(lambda: storage.get_tree(job["session_dir_key"], session_dir), "download")
        if n == 0 or not (session_dir / "session.json").is_file():
            raise JobFailed(
                "session_expired",
                f"Session {job['session_id']} is no longer stored: identify the video again.",
            )
        faces = self.face_audio(storage, job, inputs)
        return SyncJob(
            video=video,
            session_dir=str(session_dir),
            faces=faces,
            original_volume=job["original_volume"],
            out_path=str(out / "result.mp4"),
            log=log_path,
        )

    def face_audio(self, storage: Storage, job: dict[str, Any], inputs: Path
                   ) -> tuple[FaceAudioJob, ...]:
        """Each chosen face with its audio fetched into ``inputs``."""
        return tuple(
            FaceAudioJob(
                face_id=f["face_id"],
                audio=str(self.fetch(storage, f["audio_key"], inputs / f"audio{i}")),
                start_ms=f["start_ms"],
                end_ms=f["end_ms"],
                insert_ms=f["insert_ms"],
                volume=f["volume"],
                sync_mode=f.get("sync_mode"),
            )
            for i, f in enumerate(job["faces"])
        )

    def upstream_job(self, storage: Storage, link_ttl_ms: int, now_ms: int) -> Job:
        """The job of an engine that runs elsewhere (worker/upstream_engine.py): the
        video is not copied here (upstream fetches it itself, from the client's own URL
        or a signed link to lipdub's copy, valid ``link_ttl_ms``); audio is, since it
        goes inline."""
        job = json.loads(self.row["job_json"])
        out = self.scratch / "out"
        out.mkdir(parents=True, exist_ok=True)
        log_path = str(self.scratch / "engine.log")
        if self.row["model"] == IDENTIFY:
            expires = now_ms + link_ttl_ms
            url = job.get("source_url") or storage.signed_url(job["video_key"], expires)
            return IdentifyJob(
                video="", out_dir=str(out / "session"), log=log_path,
                task_id=self.task_id, video_url=url,
            )
        inputs = self.scratch / "in"
        faces = self.face_audio(storage, job, inputs)
        return SyncJob(
            video="",
            session_dir="",
            faces=faces,
            original_volume=job["original_volume"],
            out_path=str(out / "result.mp4"),
            log=log_path,
            task_id=self.task_id,
            session_id=job["session_id"],
        )

    # --- outputs ---------------------------------------------------------------------

    def publishable(
        self, storage: Storage, out: Output
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Upload the outputs under the attempt's keys; returns (result, session row)."""
        if not isinstance(out, IdentifyOutput):
            key = f"{self.prefix}/result.mp4"
            self.retried(lambda: storage.put_file(key, Path(out.path)), "upload")
            result = {
                "result_key": key,
                "videoDuration": round(out.duration_ms / 1000, 3),
                "duration_ms": out.duration_ms,
                "frame_count": out.frame_count,
                "notes": out.notes,
            }
            return result, None
        session_dir = Path(out.session_dir)
        dir_key = f"{self.prefix}/session"
        self.retried(lambda: storage.put_tree(dir_key, session_dir), "upload")

        def key_of(path: str) -> str:
            return f"{dir_key}/{Path(path).resolve().relative_to(session_dir.resolve())}"

        result = {
            "session_id": out.session_id,
            "faces": [
                {
                    "face_id": f.face_id,
                    "start_time": f.start_time,
                    "end_time": f.end_time,
                    "thumbnail_key": key_of(f.thumbnail),
                    "not_renderable": f.not_renderable,
                }
                for f in out.faces
            ],
            "unusable": out.unusable,
        }
        job = json.loads(self.row["job_json"])
        session = {
            "session_id": out.session_id,
            "account": self.row["account"],
            "task_id": self.task_id,
            "video_key": job["video_key"],
            "dir_key": dir_key,
            "duration_ms": int(out.video["duration_ms"]),
            # A session's sync runs where it was identified (upstream sessions live there).
            "engine": self.row.get("engine"),
            "faces_json": json.dumps(
                [
                    {
                        "face_id": f.face_id,
                        "start_time": f.start_time,
                        "end_time": f.end_time,
                        "segments": f.segments,
                        "not_renderable": f.not_renderable,
                    }
                    for f in out.faces
                ]
            ),
        }
        return result, session

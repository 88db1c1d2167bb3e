"""Kling's cloud as an engine: identify and lip-sync run on Kling's official API with the
operator's credentials, and come back as lipdub's own outputs (a session with face
thumbnails, a result video in scratch) for the worker to publish like any other.

What makes it safe to retry (docs/kling-engine.md):

- Every upstream call that creates something is recorded (``store.record_upstream``)
  the moment it returns, before anything else happens.
- A lip-sync task is submitted with lipdub's task id as ``external_task_id``, after its
  intent is recorded. An attempt that finds the intent but no Kling task id (its
  predecessor died between the submit and the record, or the answer never arrived)
  first looks the task up by that id; only a task Kling does not have is submitted. So
  a crash anywhere submits once and bills once.
- Identify is synchronous at Kling and has no id of ours: its answer is recorded whole,
  and a retry reuses it (Kling keeps a session 24 h, as lipdub does).

Progress: Kling says only submitted / processing / succeed; the fraction reported while
waiting creeps towards 0.9 so that lipdub's stall detection (no progress for
``stall_s``) does not stop a task that Kling is still working on.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import urllib.parse
import uuid
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lipdub.errors import LipdubError
from lipdub.media.fetch import fetch_to_file, resolve_checked
from lipdub.service.context import Context
from lipdub.service.upstream import (
    Cancelled,
    GaveUp,
    KlingClient,
    KlingError,
    failure_for,
    task_failure,
    with_backoff,
)
from lipdub.service.upstream.failures import retryable
from lipdub.service.worker.protocol import (
    FaceAudioJob,
    FoundFace,
    IdentifyJob,
    IdentifyOutput,
    Job,
    Output,
    SyncJob,
    SyncOutput,
)
from lipdub.service.worker.runner import EngineRunner, JobFailed, ProgressFn

log = logging.getLogger("lipdub.upstream")
T = TypeVar("T")
KLING = "kling"
# Kling takes sound_file as Base64 of an .mp3/.wav/.m4a/.aac file of at most 5 MB.
KLING_AUDIO_FORMATS = {"mp3", "wav", "aac", "mov,mp4,m4a,3gp,3g2,mj2"}
KLING_AUDIO_MAX_BYTES = 5 * 1024 * 1024
# Audio in another format is sent as 16 kHz mono 16-bit WAV: 60 s (the longest clip
# lipdub accepts) is 1.9 MB, 2.6 MB as Base64, inside Kling's limit.
WAV_RATE = 16_000
# A face thumbnail from Kling is a small JPEG; anything larger is not one.
MAX_FACE_IMAGE_BYTES = 5 * 1024 * 1024
# Waiting on Kling, the reported fraction approaches 0.9 with this time constant.
PROGRESS_TAU_S = 120.0
# Copying a result or a thumbnail from Kling's CDN: tries, and the pause between them.
DOWNLOAD_TRIES = 3
DOWNLOAD_PAUSE_S = 2.0


def upstream_engine(name: str, ctx: Context) -> EngineRunner:
    """The engine called ``name`` (a task's ``engine`` column, never "local")."""
    if name == KLING:
        return KlingEngine(ctx)
    raise JobFailed(
        "upstream_config",
        f"The task names engine {name!r}, which this worker does not have; it was "
        "refunded: upgrade the worker to the API's version.",
    )


def upstream_problem(name: str, ctx: Context) -> str | None:
    """Why engine ``name`` cannot run here (missing settings), or None."""
    if name != KLING:
        return f"there is no engine {name!r}"
    client = KlingClient.from_settings(ctx.settings)
    try:
        return client.problem()
    finally:
        client.close()


class KlingEngine:
    """An ``EngineRunner`` whose work happens at Kling."""

    def __init__(self, ctx: Context, client: KlingClient | None = None) -> None:
        self.ctx = ctx
        self.client = client or KlingClient.from_settings(ctx.settings)

    def run(self, job: Job, progress: ProgressFn, cancel: threading.Event) -> Output:
        problem = self.client.problem()
        if problem is not None:
            raise JobFailed(
                "upstream_config",
                f"The Kling engine is not configured on this server ({problem}); the task "
                "was refunded. The operator must set it (docs/kling-engine.md).",
            )
        run = _Run(progress, cancel)
        try:
            if isinstance(job, IdentifyJob):
                return self._identify(job, run)
            return self._sync(job, run)
        except GaveUp as e:
            f = failure_for(e.error, e.waited_s)
            raise JobFailed(f.code, f.message) from None
        except Cancelled:
            raise JobFailed("cancelled", "The task was cancelled while running.") from None
        except KlingError as e:
            f = failure_for(e)
            raise JobFailed(f.code, f.message) from None

    # --- identify ----------------------------------------------------------------------

    def _identify(self, job: IdentifyJob, run: _Run) -> IdentifyOutput:
        store = self.ctx.store
        row = store.get_task(job.task_id)
        assert row is not None
        record = store.upstream(job.task_id)
        if record is not None and record["response_json"]:
            # An earlier attempt identified it (and Kling charged for it): reuse that.
            data = json.loads(record["response_json"])
        else:
            self._check_reachable(job.video_url)
            data = self._retried(lambda: self.client.identify(job.video_url), job, run)
            store.record_upstream(
                job.task_id,
                KLING,
                upstream_session_id=str(data.get("session_id", "")),
                status="identified",
                response_json=json.dumps(data),
                charge=_charge(data),
            )
        run.progress(0.6)
        faces = data.get("face_data") or []
        if not faces:
            raise JobFailed(
                "no_faces",
                "Kling found no face it can lip-sync in this video; the task was refunded.",
            )
        out = Path(job.out_dir)
        (out / "faces").mkdir(parents=True, exist_ok=True)
        found = []
        for i, f in enumerate(faces):
            face_id = str(f["face_id"])
            thumb = out / "faces" / f"{i:03d}.jpg"
            self._download(str(f["face_image"]), thumb, MAX_FACE_IMAGE_BYTES, "face image", run)
            start, end = int(f["start_time"]), int(f["end_time"])
            found.append(FoundFace(face_id, start, end, [[start, end]], str(thumb)))
            run.progress(0.6 + 0.4 * (i + 1) / len(faces))
        job_json = json.loads(row["job_json"])
        return IdentifyOutput(
            session_id=f"session_{uuid.uuid4().hex}",
            session_dir=str(out),
            video={"duration_ms": int(job_json["duration_ms"])},
            faces=found,
        )

    def _check_reachable(self, url: str) -> None:
        """Kling fetches lipdub's signed link from outside: refuse a public URL that is
        this machine or a private network (the default is 127.0.0.1), unless this
        service's own URL policy allows that network (tests on loopback)."""
        public = self.ctx.storage.public_url
        if not url.startswith(public + "/"):
            return  # the client's own URL, passed through
        parts = urllib.parse.urlsplit(public)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            resolve_checked(parts.hostname or "", port, self.ctx.policy, "LIPDUB_PUBLIC_URL")
        except (LipdubError, ValueError):
            raise JobFailed(
                "upstream_config",
                f"This video was uploaded to lipdub, so Kling must fetch it from lipdub's "
                f"signed link, but LIPDUB_PUBLIC_URL ({public}) is not an address Kling can "
                "reach; the task was refunded. The operator must set LIPDUB_PUBLIC_URL to "
                "this service's public address (or the client can send a public video_url).",
            ) from None

    # --- lip-sync ----------------------------------------------------------------------

    def _sync(self, job: SyncJob, run: _Run) -> SyncOutput:
        store = self.ctx.store
        row = store.get_task(job.task_id)
        assert row is not None
        session = store.get_session(job.session_id, row["account"])
        identified = store.upstream(session["task_id"]) if session is not None else None
        if session is None or identified is None or not identified["upstream_session_id"]:
            raise JobFailed(
                "session_expired",
                f"Session {job.session_id} has no Kling session any more: identify the "
                "video again.",
            )
        if len(job.faces) != 1:  # refused at submission; a task queued before that rule
            raise JobFailed(
                "invalid_input",
                "The Kling engine lip-syncs one face per task: send one face_choose entry.",
            )
        record = store.upstream(job.task_id)
        upstream_id = record["upstream_task_id"] if record is not None else None
        if not upstream_id:
            body = self._body(job, job.faces[0], identified["upstream_session_id"],
                              int(session["duration_ms"]))
            # A record without a task id means an earlier try began a submit and died
            # (killed, shut down) before it could record Kling's answer: it may have made
            # the task, so look for it first. The intent is recorded before every submit.
            look_first = record is not None
            store.record_upstream(
                job.task_id, KLING,
                upstream_session_id=identified["upstream_session_id"], status="submitting",
            )
            task = self._submit_once(job, body, run, look_first=look_first)
            upstream_id = str(task["task_id"])
            store.record_upstream(
                job.task_id,
                KLING,
                upstream_task_id=upstream_id,
                upstream_session_id=identified["upstream_session_id"],
                status=str(task.get("task_status") or "submitted"),
            )
            log.info("task %s: Kling task %s", job.task_id, upstream_id)
        run.progress(0.1)
        done = self._wait(job, upstream_id, run)
        videos = (done.get("task_result") or {}).get("videos") or []
        if not videos or not videos[0].get("url"):
            raise JobFailed(
                "upstream_error",
                "Kling reported the task done but gave no video; the task was refunded: "
                "resubmit it, and report it if it repeats.",
            )
        out = Path(job.out_path)
        limit = 4 * self.ctx.settings.max_video_bytes  # a re-encode may be larger
        self._download(str(videos[0]["url"]), out, limit, "result video", run)
        from lipdub.media.video import probe

        try:
            info = probe(out)
        except LipdubError as e:
            raise JobFailed(
                "upstream_error", f"Kling's result is not a playable video ({e}); the task "
                "was refunded: resubmit it."
            ) from None
        run.progress(1.0)
        return SyncOutput(str(out), int(info.duration_ms), int(info.frame_count))

    def _body(
        self, job: SyncJob, face: FaceAudioJob, upstream_session: str, duration_ms: int
    ) -> dict[str, Any]:
        end = face.end_ms
        if face.sync_mode == "cut_off":
            # Kling plays the clip once and refuses one running past the video: cut it
            # here, as lipdub's own engine would.
            end = min(end, face.start_ms + max(0, duration_ms - face.insert_ms))
        return {
            "session_id": upstream_session,
            "face_choose": [
                {
                    "face_id": face.face_id,
                    "sound_file": _audio_base64(Path(face.audio)),
                    "sound_start_time": face.start_ms,
                    "sound_end_time": end,
                    "sound_insert_time": face.insert_ms,
                    "sound_volume": face.volume,
                    "original_audio_volume": job.original_volume,
                }
            ],
            # lipdub's task id: how a retry finds this task instead of paying twice.
            "external_task_id": job.task_id,
        }

    def _submit_once(
        self, job: SyncJob, body: dict[str, Any], run: _Run, look_first: bool
    ) -> dict[str, Any]:
        """Kling's task for this lipdub task: found by external_task_id if an earlier try
        may have created it, else submitted (retried through outages and rate limits,
        looking again before each retry: a try without an answer may have gone through)."""
        look = look_first

        def once() -> dict[str, Any]:
            nonlocal look
            if look:
                found = self.client.find_by_external_id(job.task_id)
                if found is not None:
                    log.info("task %s: found Kling task %s", job.task_id, found.get("task_id"))
                    return found
            look = True
            return self.client.submit(body)

        try:
            return self._retried(once, job, run)
        except KlingError as e:
            if look_first or e.code not in (1200, 1201):
                raise
            # A refusal of a parameter may be Kling refusing our external_task_id as
            # already used: then the task exists, and is ours.
            found = self._retried(lambda: self.client.find_by_external_id(job.task_id), job, run)
            if found is None:
                raise
            return found

    def _wait(self, job: SyncJob, upstream_id: str, run: _Run) -> dict[str, Any]:
        """Poll until Kling's task ends. Outages while waiting are waited out (the task
        runs on at Kling, and is paid for): the model's run-time limit ends the wait."""
        s = self.ctx.settings
        started = time.monotonic()
        status = None
        pause = s.kling_poll_s
        while True:
            try:
                task = self.client.task(upstream_id)
                pause = s.kling_poll_s
            except KlingError as e:
                if not retryable(e):
                    raise
                log.warning("task %s: polling Kling: %s", job.task_id, e)
                pause = min(pause * 2, s.kling_backoff_max_s)
                task = None
            if task is not None:
                new = str(task.get("task_status") or "")
                if new != status:
                    status = new
                    self.ctx.store.record_upstream(
                        job.task_id, KLING, status=new[:16], charge=_charge(task)
                    )
                if new == "succeed":
                    return task
                if new == "failed":
                    f = task_failure(task.get("task_status_msg"))
                    raise JobFailed(f.code, f.message)
            waited = time.monotonic() - started
            run.progress(0.1 + 0.8 * (1 - math.exp(-waited / PROGRESS_TAU_S)))
            if run.cancel.wait(pause):
                raise Cancelled()

    # --- shared ------------------------------------------------------------------------

    def _retried(self, fn: Callable[[], T], job: Job, run: _Run) -> T:
        s = self.ctx.settings
        return with_backoff(
            fn, f"task {job.task_id}: Kling", run.cancel, s.kling_retry_s,
            s.kling_backoff_s, s.kling_backoff_max_s, waiting=run.alive,
        )

    def _download(self, url: str, dest: Path, max_bytes: int, what: str, run: _Run) -> None:
        """Copy a file Kling serves (its CDN), through lipdub's own URL checks."""
        s = self.ctx.settings
        dest.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, DOWNLOAD_TRIES + 1):
            try:
                fetch_to_file(
                    url, dest, self.ctx.policy, field=f"Kling's {what}", max_bytes=max_bytes,
                    timeout_s=max(s.fetch_timeout_s, s.kling_timeout_s),
                    connect_timeout_s=s.fetch_connect_timeout_s,
                    max_redirects=s.max_redirects,
                )
                return
            except LipdubError as e:
                if attempt == DOWNLOAD_TRIES:
                    raise JobFailed(
                        "upstream_unavailable",
                        f"Kling's {what} could not be copied ({e}); the task was refunded: "
                        "resubmit it.",
                    ) from None
                log.warning("copying Kling's %s: %s; trying again", what, e)
                run.alive()
                if run.cancel.wait(DOWNLOAD_PAUSE_S * attempt):
                    raise Cancelled() from None


class _Run:
    """One run's progress and cancel event (the engine itself is shared by the slots)."""

    def __init__(self, report: ProgressFn, cancel: threading.Event) -> None:
        self.report = report
        self.cancel = cancel
        self.fraction = 0.0

    def progress(self, fraction: float) -> None:
        self.fraction = max(self.fraction, fraction)
        self.report(self.fraction)

    def alive(self) -> None:
        """Waiting on Kling (retrying an outage, a rate limit): a hair of progress keeps
        lipdub's stall detector, meant for a hung engine, from stopping the task; the
        model's run-time limit still bounds the wait."""
        self.progress(min(0.95, self.fraction + 0.001))


def _charge(data: dict[str, Any]) -> str | None:
    """What Kling says the call cost (``final_unit_deduction``, in its units)."""
    value = data.get("final_unit_deduction")
    return None if value in (None, "") else str(value)[:32]


def _audio_base64(path: Path) -> str:
    """The clip's file as Kling's sound_file: the file itself when Kling takes its format
    and size, else the sound as 16 kHz mono WAV (lipdub accepts more formats than Kling)."""
    import av

    try:
        with av.open(str(path)) as container:
            fmt = container.format.name
    except Exception:
        fmt = ""
    data = path.read_bytes()
    if fmt in KLING_AUDIO_FORMATS and len(data) * 4 / 3 <= KLING_AUDIO_MAX_BYTES:
        return base64.b64encode(data).decode()
    from lipdub.media.audio import decode_audio

    samples = decode_audio(path, sr=WAV_RATE, channels=1)
    pcm = (samples.reshape(-1).clip(-1, 1) * 32767).astype("<i2").tobytes()
    wav = path.with_suffix(".kling.wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(WAV_RATE)
        w.writeframes(pcm)
    return base64.b64encode(wav.read_bytes()).decode()

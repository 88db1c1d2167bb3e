"""sync(): make chosen faces in a video speak new audio.

Per face: decode its clip, crop it, place it on the video timeline; mix every clip with
the original track; turn each face's own clip into per-frame mouth targets in that
person's units (calibrated on the source when it shows them speaking); render.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipdub.errors import InputError
from lipdub.faces.identify import identify
from lipdub.faces.session import Face, Session
from lipdub.media import fit as length
from lipdub.media.audio import PlacedClip, crop, decode_audio, mix, read_video_audio, to_mono
from lipdub.media.pools import serial_libraries
from lipdub.media.video import probe
from lipdub.render.engine import ClassicEngine, Engine, FaceJob, Preview, preview_strip
from lipdub.speech.features import FEATURE_SR, to_16k
from lipdub.speech.mouth import (
    SpeakerProfile,
    SpeechAnalysis,
    analyse_speech,
    build_profile,
    mouth_targets,
    step_limit,
)

OUT_SR = 48000  # the output track's sample rate
RAMP_FRAMES = 4  # frames over which a window fades in and out

Progress = Callable[[float], None]


@dataclass(frozen=True)
class FaceAudio:
    """One face's new speech: the clip ``[start_ms, end_ms)`` of ``audio_path``, placed at
    ``insert_ms`` on the video timeline, at ``volume`` (0..2). ``sync_mode`` says what to do
    when the clip and the video from ``insert_ms`` to its end differ in length (see
    ``lipdub.media.fit``: cut_off, loop, bounce, silence, remap; None refuses a clip
    that runs past the video's end)."""

    face_id: str
    audio_path: str | Path
    start_ms: float = 0.0
    end_ms: float | None = None
    insert_ms: float = 0.0
    volume: float = 1.0
    sync_mode: str | None = None


@dataclass
class SyncResult:
    path: Path
    duration_ms: int
    frame_count: int
    session_id: str
    faces: list[dict[str, object]] = field(default_factory=list)
    # Per face, how its audio was fitted to the video (lipdub.media.fit.Fit.to_json),
    # and one sentence for each clip that was cut, repeated or stretched.
    fits: list[dict[str, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Wall seconds per stage: prepare (audio, mouth targets), bank, select, render_encode.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def trimmed_ms(self) -> float:
        """Audio cut off past the video's end, over all faces."""
        return sum(float(str(f["trimmed_ms"])) for f in self.fits)

    def to_json(self) -> dict[str, object]:
        return {"output": str(self.path), "duration_ms": self.duration_ms,
                "frame_count": self.frame_count, "session_id": self.session_id,
                "faces": self.faces, "fits": self.fits, "notes": self.notes,
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}


def sync(
    video: str | Path,
    faces: Sequence[FaceAudio],
    *,
    out_path: str | Path,
    session: Session | None = None,
    original_volume: float = 1.0,
    progress: Progress | None = None,
    preview_path: str | Path | None = None,
    engine: Engine | None = None,
    max_audio_ms: float | None = None,
) -> SyncResult:
    """Render ``video`` with each listed face speaking its audio; write ``out_path`` (mp4)."""
    video = Path(video)
    report = progress or (lambda _f: None)
    if not faces:
        raise InputError("No face to sync: give at least one face_id with its audio.")
    ids = [f.face_id for f in faces]
    if len(set(ids)) != len(ids):
        raise InputError("A face_id is listed twice: give each face one audio clip.")
    if session is None:
        session = identify(video, progress=lambda f: report(0.3 * f))
        base = 0.3
    else:
        base = 0.0
        facts = probe(video)
        sv = session.video
        # Both sides come from probe (identify may lower frame_count to what decodes).
        if (facts.width, facts.height, facts.duration_ms) != (sv.width, sv.height,
                                                              sv.duration_ms):
            raise InputError(
                f"Session {session.session_id} was made from another video "
                f"({sv.width}x{sv.height}, {sv.duration_ms} ms; this one is "
                f"{facts.width}x{facts.height}, {facts.duration_ms} ms): identify this "
                "video first."
            )
    t_start = time.perf_counter()  # after identify: the stages below are sync's own
    eng = engine or ClassicEngine()
    with serial_libraries():
        begin = getattr(eng, "begin", None)
        if callable(begin):  # the bank is built while the audio is prepared
            begin(video, [session.face(fa.face_id) for fa in faces])
        try:
            return _prepare_and_render(video, faces, session, eng, out_path, base, report,
                                       t_start, original_volume, preview_path, max_audio_ms)
        except BaseException:
            abandon = getattr(eng, "abandon", None)
            if callable(abandon):
                abandon()
            raise


def _prepare_and_render(video: Path, faces: Sequence[FaceAudio], session: Session,
                        eng: Engine, out_path: str | Path, base: float, report: Progress,
                        t_start: float, original_volume: float,
                        preview_path: str | Path | None,
                        max_audio_ms: float | None) -> SyncResult:
    info = session.video
    duration_ms = float(info.duration_ms)
    n_frames = info.frame_count
    times = session.frame_times_ms if len(session.frame_times_ms) == n_frames else (
        np.arange(n_frames) * 1000.0 / info.fps)
    clips: list[PlacedClip] = []
    jobs: list[FaceJob] = []
    untouched: list[str] = []  # notes: frames of a chosen face left as they are, and why
    fits: list[length.Fit] = []
    # Preparing the audio and mouth targets takes seconds before the first frame renders:
    # it gets the first PREP of the progress, so a client sees the task move at once.
    prep = 0.08
    report(base + (1 - base) * 0.01)
    # The source side runs in a thread beside the new speech's side (both are mostly
    # NumPy/SciPy and FFmpeg, which release the GIL): the video's own track, decoded once
    # (mixed into the output, and, mono, the person's own speech to calibrate on), then each
    # face's profile from it.
    side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipdub-profile")
    try:
        src_f = side.submit(_source_track, video, info.has_audio)
        profile_f = {fa.face_id: side.submit(_profile, session.face(fa.face_id), src_f,
                                             times, info.fps) for fa in faces}
        for i, fa in enumerate(faces):
            face = session.face(fa.face_id)
            samples = decode_audio(fa.audio_path, OUT_SR, 2, max_duration_ms=max_audio_ms)
            clip = crop(samples, OUT_SR, fa.start_ms, fa.end_ms)
            if not 0 <= fa.insert_ms < duration_ms:
                raise InputError(
                    f"Insert point {fa.insert_ms:.0f} ms is outside the video, which is "
                    f"{duration_ms:.0f} ms long: choose a time from 0 up to its end."
                )
            # The same rule as the API's (lipdub.media.fit): nothing is cut silently.
            fit = length.plan(1000.0 * len(clip) / OUT_SR, fa.insert_ms, duration_ms,
                              fa.sync_mode, where=fa.face_id)
            fits.append(fit)
            clip = length.apply(clip, OUT_SR, fit)
            placed = PlacedClip(clip, OUT_SR, fa.insert_ms, fa.volume)
            clips.append(placed)
            end_ms = min(fa.insert_ms + placed.duration_ms, duration_ms)
            _check_overlap(face, fa.insert_ms, end_ms)
            timeline = _timeline(clip, fa.insert_ms, times, info.fps)
            analysis = analyse_speech(timeline, FEATURE_SR, info.fps, n_frames,
                                      frame_times_ms=times)
            jobs.append(_job(face, timeline, analysis, profile_f[fa.face_id].result(),
                             fa.insert_ms, end_ms, times, info.fps))
            untouched += _untouched(face, fa.insert_ms, end_ms, jobs[-1])
            report(base + (1 - base) * prep * (i + 1) / len(faces))
        original = src_f.result()[0]
        del samples, clip, placed, timeline, analysis  # the last face's: freed for the render
    finally:
        side.shutdown(wait=True, cancel_futures=True)

    track = mix(duration_ms, OUT_SR, clips, original, original_volume=original_volume,
                reuse_original=True)
    # The new speech is not needed while rendering (a minute of stereo is 23 MB a face);
    # the original's buffer now holds the mix itself.
    del clips, original, src_f, profile_f
    prep_s = time.perf_counter() - t_start

    preview = Preview(frames=_preview_frames(jobs)) if preview_path else None
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.mp4")
    written = eng.render(
        video, session, jobs, tmp, track, OUT_SR,
        lambda f: report(base + (1 - base) * (prep + (1 - prep) * f)), preview,
    )
    tmp.replace(out)  # a crash never leaves a half-written file under the final name
    if preview is not None and preview_path is not None:
        preview_strip(preview, Path(preview_path))
    report(1.0)
    notes = [n for fa, ft in zip(faces, fits, strict=True) if (n := ft.note(fa.face_id))]
    notes += untouched
    return SyncResult(
        path=out,
        duration_ms=info.duration_ms,
        frame_count=written,
        session_id=session.session_id,
        faces=[{"face_id": j.face.face_id, **j.stats} for j in jobs],
        fits=[{"face_id": fa.face_id, **ft.to_json()} for fa, ft in zip(faces, fits, strict=True)],
        notes=notes,
        timings={"prepare_s": prep_s, **getattr(eng, "timings", {})},
    )


def _check_overlap(face: Face, start_ms: float, end_ms: float) -> None:
    if not any(a < end_ms and start_ms < b for a, b in face.segments):
        spans = ", ".join(f"{a}-{b} ms" for a, b in face.segments[:4])
        raise InputError(
            f"{face.face_id} is not visible between {start_ms:.0f} and {end_ms:.0f} ms "
            f"(it is visible at {spans}): move sound_insert_time into a visible span."
        )


_WHY = {"turned": "the head is turned too far for the mouth to be re-rendered",
        "mouth_covered": "something covers the mouth"}


def _untouched(face: Face, start_ms: float, end_ms: float, job: FaceJob) -> list[str]:
    """One note per span of the face's audio window that identify reported as not
    re-renderable (left as it is); InputError when no frame of the window can be."""
    spans = face.not_renderable_between(start_ms, end_ms)
    said = "; ".join(f"{a / 1000:.2f}-{b / 1000:.2f} s: {_WHY.get(why, why)}"
                     for a, b, why in spans)
    if not (job.alpha > 0).any():
        raise InputError(
            f"{face.face_id} cannot be re-rendered between {start_ms:.0f} and "
            f"{end_ms:.0f} ms" + (f" ({said})" if said else "") +
            ": move sound_insert_time to where its mouth is visible.")
    return [f"{face.face_id}: {a / 1000:.2f}-{b / 1000:.2f} s left as it is: "
            f"{_WHY.get(why, why)}" for a, b, why in spans]


def _source_track(video: Path, has_audio: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The video's own track (stereo at OUT_SR) and its mono mix at FEATURE_SR (all the
    speech analysis reads; a third of the memory), or (None, None)."""
    original = read_video_audio(video, OUT_SR, 2) if has_audio else None
    return original, (to_16k(original, OUT_SR) if original is not None else None)


def _profile(face: Face, source: Future[tuple[np.ndarray | None, np.ndarray | None]],
             times: np.ndarray, fps: float) -> SpeakerProfile:
    tr = face.track
    return build_profile(tr.landmarks, fps, source.result()[1], FEATURE_SR, frames=tr.frames,
                         frame_times_ms=times)


def _timeline(clip: np.ndarray, insert_ms: float, times: np.ndarray, fps: float) -> np.ndarray:
    """This face's own speech alone on the video timeline (other faces' clips and the
    original sound would move this mouth for words it does not say), mono at FEATURE_SR:
    the analysis resamples to it anyway, and a minute at OUT_SR is 11 MB a face."""
    timeline = np.zeros(int(np.ceil((float(times[-1]) + 1000.0 / fps) * OUT_SR / 1000)) + 1,
                        np.float32)
    i0 = int(round(insert_ms * OUT_SR / 1000))
    seg = clip[: max(0, len(timeline) - i0)]
    timeline[i0 : i0 + len(seg)] = to_mono(seg)
    return to_16k(timeline, OUT_SR)


def _job(face: Face, timeline: np.ndarray, analysis: SpeechAnalysis, profile: SpeakerProfile,
         insert_ms: float, end_ms: float, times: np.ndarray, fps: float) -> FaceJob:
    n = len(times)
    tr = face.track
    targets = mouth_targets(timeline, FEATURE_SR, fps, n, profile, frame_times_ms=times,
                            analysis=analysis)
    inside = (times >= insert_ms) & (times < end_ms)
    visible = np.zeros(n, bool)
    visible[tr.mouth_frames(n)] = True  # a covered mouth is left as it is
    alpha = _ramped(inside & visible, RAMP_FRAMES)
    return FaceJob(face=face, target_open=targets.open.astype(np.float64),
                   target_width=targets.width.astype(np.float64), alpha=alpha,
                   target_closure=targets.closure.astype(np.float64),
                   max_step=step_limit(profile, fps),
                   stats={"calibrated": float(profile.open_cal is not None
                                               and profile.open_cal.weight > 0)})


def _ramped(on: np.ndarray, ramp: int) -> np.ndarray:
    """1 inside runs of ``on``, easing from 0 over ``ramp`` frames at each run's ends."""
    a = on.astype(np.float64)
    if ramp <= 0 or not on.any():
        return a
    # Distance (in frames) to the nearest frame that is off, capped at ramp.
    n = len(on)
    dist = np.full(n, ramp + 1.0)
    last = -np.inf
    for i in range(n):
        last = i if not on[i] else last
        dist[i] = min(dist[i], i - last)
    last = np.inf
    for i in range(n - 1, -1, -1):
        last = i if not on[i] else last
        dist[i] = min(dist[i], last - i)
    w = np.clip(dist / (ramp + 1), 0, 1)
    return a * (0.5 - 0.5 * np.cos(np.pi * w))  # smooth-step ease


def _preview_frames(jobs: list[FaceJob], count: int = 6) -> dict[str, list[int]]:
    """Per face, the frames the preview shows: its most open and two most closed."""
    shown: dict[str, list[int]] = {}
    for j in jobs:
        active = np.nonzero(j.alpha >= 1.0)[0]
        if len(active) == 0:
            continue
        opens = j.target_open[active]
        order = active[np.argsort(opens)]
        picks = np.concatenate([order[-(count - 2):], order[:2]])
        shown[j.face.face_id] = sorted({int(x) for x in picks})
    return shown

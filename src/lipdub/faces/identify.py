"""identify(): every person's face in a video, with a stable id, thumbnail and track.

Pipeline: stream frames -> track faces within shots -> group tracks into people by face
embedding -> smooth landmarks, estimate pose -> rank people by prominence -> session.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from lipdub.errors import NoFacesError
from lipdub.faces.cluster import group_tracks
from lipdub.faces.crops import CropCollector
from lipdub.faces.occlusion import MouthCover, covered_spans
from lipdub.faces.pose import head_pose
from lipdub.faces.session import Face, FaceTrack, Session, Unusable
from lipdub.faces.smoothing import OneEuro
from lipdub.faces.tracker import FaceTracker, Seen, Track, TrackerSettings, landmark_box
from lipdub.faces.turned import reason_spans, turned_rows
from lipdub.media.pools import serial_libraries
from lipdub.media.video import iter_frames, probe

Progress = Callable[[float], None]


@dataclass(frozen=True)
class IdentifySettings:
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    min_visible_ms: int = 400  # people seen for less than this in total are left out
    min_track_frames: int = 3
    # The mouth model needs this many frames of a person to learn their range; a face
    # seen less (possible at low frame rates even past min_visible_ms) cannot be synced.
    min_person_frames: int = 10
    same_person: float = 0.5  # embedding distance under which two tracks are one person
    bridge_gap_ms: int = 300  # visible segments closer than this are one segment
    thumbnail_px: int = 256
    keep_crops: bool = True  # the renderer's bank crops (faces.crops), kept while decoding
    max_duration_ms: int | None = None


def identify(
    video: str | Path,
    *,
    out_dir: str | Path | None = None,
    settings: IdentifySettings | None = None,
    progress: Progress | None = None,
    session_id: str | None = None,
) -> Session:
    """Find every face in ``video``; save the session to ``out_dir`` when given.

    Raises :class:`~lipdub.errors.MediaError` for unreadable input and
    :class:`~lipdub.errors.NoFacesError` when nobody qualifies.
    """
    with serial_libraries():
        return _identify(video, out_dir, settings or IdentifySettings(), progress, session_id)


def _identify(video: str | Path, out_dir: str | Path | None, s: IdentifySettings,
              progress: Progress | None, session_id: str | None) -> Session:
    info = probe(video, max_duration_ms=s.max_duration_ms)
    tracker = FaceTracker(info.width, info.height, info.fps, s.tracker)
    times: list[float] = []
    total = max(info.frame_count, 1)
    step = max(total // 100, 1)

    def tick(n: int) -> None:
        if progress is not None and n % step == 0:
            progress(min(n / total, 1.0) * 0.95)

    crops = CropCollector(expected_frames=info.frame_count) if s.keep_crops else None
    cover = MouthCover()

    def keep(seen: list[Seen]) -> None:
        for f, track_id, lm in seen:
            cover.offer(f, track_id, lm)
            if crops is not None:
                crops.offer(f, track_id, lm)

    try:
        for frame in iter_frames(video, progress=tick):
            times.append(frame.time_ms)
            keep(tracker.feed(frame))
        keep(tracker.flush())  # faces the last detections found
        tracks = [t for t in tracker.close() if len(t.frames) >= s.min_track_frames]
    finally:
        if crops is not None:
            crops.close()
    frame_times = np.asarray(times, dtype=np.float64)
    if len(frame_times) != info.frame_count:
        # The decoder is the truth (a truncated tail, or packets without pictures).
        info = replace(info, frame_count=len(frame_times))
    unusable: list[Unusable] = []
    faces = _people(tracks, frame_times, info.width, info.height, info.fps, s, crops,
                    unusable, cover)
    cover.close()
    if not faces:
        searched = (f"searched for faces down to {tracker.smallest_px:.0f} px wide in this "
                    f"{info.width}x{info.height} video")
        found = "; ".join(u.describe() for u in unusable[:4])
        raise NoFacesError(detail=searched + (f"; found only {found}" if found else ""))
    session = Session(
        session_id=session_id or Session.new_id(),
        video=info,
        faces=[f for f, _ in faces],
        frame_times_ms=frame_times,
        unusable=unusable,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for face, thumb in faces:
            _write_thumbnail(out / face.thumbnail, thumb, s.thumbnail_px)
        session.save(out)
    if progress is not None:
        progress(1.0)
    return session


def _people(
    tracks: list[Track], times: np.ndarray, width: int, height: int, fps: float,
    s: IdentifySettings, crops: CropCollector | None = None,
    unusable: list[Unusable] | None = None, cover: MouthCover | None = None,
) -> list[tuple[Face, np.ndarray | None]]:
    """The people among ``tracks``, ranked; those left out are added to ``unusable``."""
    groups = group_tracks(tracks, s.same_person)
    frame_ms = 1000.0 / fps
    people = []
    for group in groups:
        members = sorted(group, key=lambda t: t.frames[0])
        frames = np.concatenate([np.asarray(t.frames, np.int32) for t in members])
        lms = np.concatenate([_smooth(t) for t in members]).astype(np.float32)
        visible_ms = len(frames) * frame_ms
        boxes = np.array([landmark_box(lm) for lm in lms], dtype=np.float32)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        too_small = float(np.median(sides)) < s.tracker.min_face_px
        pose = _poses(lms, width, height)
        turned = turned_rows([(t.frames, t.turned_at) for t in members], frames, pose)
        brief = visible_ms < s.min_visible_ms or len(frames) < s.min_person_frames
        # Too few frames left once the turned ones are out: the mouth model cannot learn
        # the person, nor is there much to re-render. Named "turned" when the turn is what
        # left too few (a brief face seen mostly turned too).
        too_turned = (bool(turned.mean() > 0.5) if brief
                      else int((~turned).sum()) < s.min_person_frames)
        if brief or too_small or too_turned:
            if unusable is not None:
                seen = _segments(frames, times, frame_ms, s.bridge_gap_ms)
                why = ("too_small" if too_small else "turned" if too_turned
                       else "too_brief")
                unusable.append(Unusable(why, seen[0][0], seen[-1][1],
                                         int(round(float(np.median(sides))))))
            continue
        area = float(np.mean((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
        # Prominence: visible time x size, size as a share of the frame.
        prominence = visible_ms / 1000.0 * area / float(width * height)
        segments = _segments(frames, times, frame_ms, s.bridge_gap_ms)
        longest = max(segments, key=lambda seg: seg[1] - seg[0])
        embs = [e for t in members for e in t.embeddings]
        emb = np.mean(embs, axis=0) if embs else np.zeros(128, np.float32)
        best = max(members, key=lambda t: t.thumb_score)
        covered = (cover.covered([t.track_id for t in members], frames) if cover is not None
                   else np.zeros(len(frames), bool))
        face = Face(
            face_id="",
            start_ms=longest[0],
            end_ms=longest[1],
            segments=segments,
            thumbnail="",
            track=FaceTrack(frames=frames, boxes=boxes, landmarks=lms, pose=pose,
                            covered=covered, turned=turned),
            embedding=emb.astype(np.float32),
            prominence=prominence,
            crops=None if crops is None else crops.for_person(
                [t.track_id for t in members], frames, lms),
            mouth_covered=covered_spans(frames, covered, times, frame_ms),
            not_renderable=reason_spans(frames, turned, covered, times, frame_ms),
        )
        people.append((face, best.thumb))
    # Stable order: prominence, then first appearance (ties are rare but must not flip).
    people.sort(key=lambda p: (-round(p[0].prominence, 6), int(p[0].track.frames[0])))
    for i, (face, _) in enumerate(people, start=1):
        face.face_id = f"face_{i:03d}"
        face.thumbnail = f"{face.face_id}.jpg"
    return people


def _poses(lms: np.ndarray, width: int, height: int) -> np.ndarray:
    """Head pose per frame. OpenCV's solver releases the GIL and nothing else runs at
    this point, so two threads halve the time (0.4 s for a minute of one face)."""
    def part(chunk: np.ndarray) -> list[np.ndarray]:
        return [head_pose(lm, width, height) for lm in chunk]

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="lipdub-pose") as pool:
        poses = [p for done in pool.map(part, np.array_split(lms, 2)) for p in done]
    return np.stack(poses).astype(np.float32) if poses else np.zeros((0, 3), np.float32)


# Mouth and jaw move fast in speech: a light filter keeps their motion (measured: ~80% of
# the raw frame-to-frame speed, the rest is detector jitter); eyes, brows and nose carry the
# head pose and get a stronger filter, which steadies the renderer's alignment.
_MOVING = np.r_[0:17, 48:68]
_FILTERS = ((1.5, 0.8), (8.0, 5.0))  # (min_cutoff Hz, beta) for steady, moving points


def _smooth(track: Track) -> np.ndarray:
    """Zero-lag smoothing: One-Euro forwards and backwards, averaged.

    Each pass lags in its own direction; the mean of the two cancels the lag while
    keeping the jitter reduction of both.
    """
    lms = np.stack(track.landmarks).astype(np.float64)
    t = np.asarray(track.times, dtype=np.float64) / 1000.0
    if len(lms) < 3:
        return lms
    # Normalise by face size so one set of filter constants fits every resolution.
    size = float(np.median([max(b[2] - b[0], 1.0) for b in map(landmark_box, lms)]))
    passes = []
    for min_cutoff, beta in _FILTERS:
        fwd = np.empty_like(lms)
        bwd = np.empty_like(lms)
        f = OneEuro(min_cutoff=min_cutoff, beta=beta)
        for i in range(len(lms)):
            fwd[i] = f(lms[i] / size, t[i]) * size
        f = OneEuro(min_cutoff=min_cutoff, beta=beta)
        for i in range(len(lms) - 1, -1, -1):
            bwd[i] = f(lms[i] / size, -t[i]) * size
        passes.append((fwd + bwd) / 2.0)
    out = passes[0]
    out[:, _MOVING] = passes[1][:, _MOVING]
    return out


def _segments(
    frames: np.ndarray, times: np.ndarray, frame_ms: float, bridge_ms: int
) -> list[tuple[int, int]]:
    def t(i: int) -> float:
        return float(times[i]) if i < len(times) else i * frame_ms

    segs: list[list[float]] = []
    for fr in frames.tolist():
        start, end = t(fr), t(fr) + frame_ms
        if segs and start - segs[-1][1] <= bridge_ms:
            segs[-1][1] = max(segs[-1][1], end)
        else:
            segs.append([start, end])
    return [(int(round(a)), int(round(b))) for a, b in segs]


def _write_thumbnail(path: Path, crop: np.ndarray | None, px: int) -> None:
    if crop is None or crop.size == 0:
        crop = np.zeros((px, px, 3), np.uint8)
    h, w = crop.shape[:2]
    scale = px / max(h, w)
    img = cv2.resize(crop, (max(1, int(w * scale)), max(1, int(h * scale))),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])

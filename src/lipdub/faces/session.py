"""The result of face identification: a session that saves to a directory and loads back.

Layout of a session directory::

    session.json        video facts, faces (ids, spans, segments, thumbnail names)
    tracks.npz          per face: frames, boxes, landmarks, pose, embedding
    crops.npz           per face: the lower-face crops (JPEG) the renderer's bank is
                        built from, so sync does not decode the video twice (optional)
    face_001.jpg ...    thumbnails

Landmarks follow dlib's 68-point layout: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
outer lips 48-59, inner lips 60-67. Boxes are ``x0, y0, x1, y1`` in pixels of the
upright (rotation-applied) frame. Pose is ``yaw, pitch, roll`` in degrees.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipdub.errors import InputError
from lipdub.faces.crops import CROPS_FILE, FaceCrops, load_crops, save_crops
from lipdub.media.video import VideoInfo

__all__ = ["Face", "FaceTrack", "Session", "VideoInfo"]

SESSION_FILE = "session.json"
TRACKS_FILE = "tracks.npz"
FORMAT_VERSION = 1


@dataclass
class FaceTrack:
    """Per-frame geometry of one person, sorted by frame index (frames may have gaps)."""

    frames: np.ndarray  # (N,) int32 frame indices
    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1
    landmarks: np.ndarray  # (N, 68, 2) float32, smoothed
    pose: np.ndarray  # (N, 3) float32 yaw, pitch, roll in degrees
    # (N,) bool: something covers the mouth there (faces/occlusion.py); never rendered.
    covered: np.ndarray | None = None
    # (N,) bool: the head is turned too far for the mouth there (faces/turned.py); never
    # rendered.
    turned: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def mouth_frames(self, n_frames: int) -> np.ndarray:
        """The frames (below ``n_frames``) where the mouth can be re-rendered: tracked,
        not covered and not turned away."""
        keep = self.frames < n_frames
        for off in (self.covered, self.turned):
            if off is not None and len(off) == len(self.frames):
                keep &= ~off
        return self.frames[keep]

    def index_of(self, frame: int) -> int | None:
        """Row of ``frame`` in this track, or None when the face is not visible there."""
        i = int(np.searchsorted(self.frames, frame))
        if i < len(self) and int(self.frames[i]) == frame:
            return i
        return None


@dataclass
class Face:
    """One person: a stable id, where they are visible, a thumbnail and their track."""

    face_id: str
    start_ms: int  # start of the longest visible segment
    end_ms: int  # end of the longest visible segment
    segments: list[tuple[int, int]]  # every visible span, ms, sorted
    thumbnail: str  # file name inside the session directory
    track: FaceTrack
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(128, np.float32))
    prominence: float = 0.0
    # Lower-face crops identify kept for the renderer's bank (None: the renderer decodes
    # the video for them, as for sessions made before crops were kept).
    crops: FaceCrops | None = None
    # Where something covers the mouth (ms spans): left untouched by sync.
    mouth_covered: list[tuple[int, int]] = field(default_factory=list)
    # Every span where the face is visible but its mouth is not re-rendered, with the
    # reason: "turned" (the head is turned too far) or "mouth_covered"; sync leaves
    # those frames untouched and says so in its notes.
    not_renderable: list[tuple[int, int, str]] = field(default_factory=list)

    def not_renderable_between(self, start_ms: float,
                               end_ms: float) -> list[tuple[int, int, str]]:
        """The not re-renderable spans that overlap ``[start_ms, end_ms)``, clipped to it."""
        return [(int(max(a, start_ms)), int(min(b, end_ms)), why)
                for a, b, why in self.not_renderable if a < end_ms and start_ms < b]

    def to_json(self) -> dict[str, object]:
        return {
            "face_id": self.face_id,
            "start_time": self.start_ms,
            "end_time": self.end_ms,
            "segments": [[int(a), int(b)] for a, b in self.segments],
            "thumbnail": self.thumbnail,
            "prominence": round(float(self.prominence), 4),
            "frames_tracked": len(self.track),
            "mouth_covered": [[int(a), int(b)] for a, b in self.mouth_covered],
            "not_renderable": [span_json(s) for s in self.not_renderable],
        }


def span_json(span: tuple[int, int, str]) -> dict[str, object]:
    """A not re-renderable span as identify's outputs show it (CLI, session, API)."""
    return {"start_time": int(span[0]), "end_time": int(span[1]), "reason": span[2]}


# Why a face found is left out (Unusable.reason, a code) and in words.
REASONS = {"too_small": "too small", "too_brief": "too brief",
           "turned": "turned too far for its mouth to be re-rendered"}


@dataclass(frozen=True)
class Unusable:
    """A face identify found but leaves out, and why: ``reason`` is "too_small" (its
    median box side ``size_px`` is under the minimum), "too_brief" (seen for less than
    the mouth model needs) or "turned" (its head turned too far for the mouth on almost
    every frame); ``start_ms``-``end_ms``: where it was seen."""

    reason: str
    start_ms: int
    end_ms: int
    size_px: int

    def describe(self) -> str:
        return (f"a face {REASONS.get(self.reason, self.reason)} ({self.size_px} px wide, "
                f"{self.start_ms / 1000:.2f}-{self.end_ms / 1000:.2f} s)")

    def to_json(self) -> dict[str, object]:
        return {"reason": self.reason, "start_time": self.start_ms,
                "end_time": self.end_ms, "size_px": self.size_px}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Unusable:
        # Sessions saved before the reasons were codes say "too small", "too brief".
        return cls(str(d["reason"]).replace(" ", "_"),
                   int(d["start_time"]),  # type: ignore[call-overload]
                   int(d["end_time"]), int(d["size_px"]))  # type: ignore[call-overload]


@dataclass(repr=False)
class Session:
    """Everything identify learned about a video, enough for the renderer to work."""

    session_id: str
    video: VideoInfo
    faces: list[Face]
    # Presentation time of every frame, ms from the first frame (handles variable frame rate).
    frame_times_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    directory: Path | None = None
    # Faces found but left out (too small, too brief), with their spans.
    unusable: list[Unusable] = field(default_factory=list)

    @staticmethod
    def new_id() -> str:
        return f"session_{uuid.uuid4().hex}"

    def __repr__(self) -> str:
        """A summary, not the landmark arrays: what print(session) should show."""
        v = self.video
        faces = ", ".join(
            f"{f.face_id} {f.start_ms}-{f.end_ms} ms ({len(f.segments)} span"
            f"{'s' if len(f.segments) != 1 else ''}"
            + (f", {len(f.not_renderable)} not re-rendered" if f.not_renderable else "")
            + ")"
            for f in self.faces
        )
        left_out = (f"; {len(self.unusable)} left out: "
                    + ", ".join(u.reason for u in self.unusable)) if self.unusable else ""
        return (
            f"Session({self.session_id}: {v.width}x{v.height}, {v.fps:g} fps, "
            f"{v.duration_ms} ms; {len(self.faces)} face(s): {faces or 'none'}{left_out})"
        )

    def face(self, face_id: str) -> Face:
        for f in self.faces:
            if f.face_id == face_id:
                return f
        known = ", ".join(f.face_id for f in self.faces) or "none"
        raise InputError(f"Unknown face_id {face_id!r}: this session has {known}.")

    def thumbnail_path(self, face: Face) -> Path:
        if self.directory is None:
            raise InputError("This session has not been saved, so it has no thumbnails on disk.")
        return self.directory / face.thumbnail

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT_VERSION,
            "session_id": self.session_id,
            "video": self.video.to_json(),
            "faces": [f.to_json() for f in self.faces],
            "unusable": [u.to_json() for u in self.unusable],
        }

    def save(self, directory: str | Path) -> Path:
        """Write JSON + arrays into ``directory`` (thumbnails are written by identify)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"_frame_times": self.frame_times_ms.astype(np.float64)}
        for f in self.faces:
            t = f.track
            arrays[f"{f.face_id}.frames"] = t.frames.astype(np.int32)
            arrays[f"{f.face_id}.boxes"] = t.boxes.astype(np.float32)
            arrays[f"{f.face_id}.landmarks"] = t.landmarks.astype(np.float32)
            arrays[f"{f.face_id}.pose"] = t.pose.astype(np.float32)
            if t.covered is not None:
                arrays[f"{f.face_id}.covered"] = t.covered.astype(bool)
            if t.turned is not None:
                arrays[f"{f.face_id}.turned"] = t.turned.astype(bool)
            arrays[f"{f.face_id}.embedding"] = f.embedding.astype(np.float32)
        np.savez_compressed(d / TRACKS_FILE, **arrays)  # type: ignore[arg-type]
        crops = {f.face_id: f.crops for f in self.faces if f.crops is not None}
        if crops:
            save_crops(d / CROPS_FILE, crops)
        else:  # never leave another session's crops beside this one's tracks
            (d / CROPS_FILE).unlink(missing_ok=True)
        tmp = d / (SESSION_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(d / SESSION_FILE)  # atomic: a reader never sees half a session
        self.directory = d
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Session:
        d = Path(directory)
        meta_path = d / SESSION_FILE
        if not meta_path.is_file():
            raise InputError(f"No session at {d}: {SESSION_FILE} is missing.")
        meta = json.loads(meta_path.read_text())
        with np.load(d / TRACKS_FILE) as z:
            arrays = {k: z[k] for k in z.files}
        crop_arrays = load_crops(d / CROPS_FILE)
        faces = []
        for fj in meta["faces"]:
            fid = fj["face_id"]
            track = FaceTrack(
                frames=arrays[f"{fid}.frames"],
                boxes=arrays[f"{fid}.boxes"],
                landmarks=arrays[f"{fid}.landmarks"],
                pose=arrays[f"{fid}.pose"],
                covered=arrays.get(f"{fid}.covered"),
                turned=arrays.get(f"{fid}.turned"),
            )
            faces.append(
                Face(
                    face_id=fid,
                    start_ms=int(fj["start_time"]),
                    end_ms=int(fj["end_time"]),
                    segments=[(int(a), int(b)) for a, b in fj["segments"]],
                    thumbnail=fj["thumbnail"],
                    track=track,
                    embedding=arrays[f"{fid}.embedding"],
                    prominence=float(fj.get("prominence", 0.0)),
                    crops=FaceCrops.from_arrays(crop_arrays, fid),
                    mouth_covered=[(int(a), int(b)) for a, b in fj.get("mouth_covered", [])],
                    not_renderable=[(int(n["start_time"]), int(n["end_time"]), str(n["reason"]))
                                    for n in fj.get("not_renderable", [])],
                )
            )
        return cls(
            session_id=meta["session_id"],
            video=VideoInfo.from_json(meta["video"]),
            faces=faces,
            frame_times_ms=arrays.get("_frame_times", np.zeros(0, np.float64)),
            directory=d,
            unusable=[Unusable.from_json(u) for u in meta.get("unusable", [])],
        )

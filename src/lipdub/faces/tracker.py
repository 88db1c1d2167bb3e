"""Detect faces every few frames and follow them in between with landmarks.

Detection (dlib HOG on a resized grey frame) is the costly step, so it runs every
``detect_every`` frames and on scene cuts. In between, each track's next landmarks come
from the shape predictor started at the box of its previous landmarks: faces move little
from one frame to the next, and the predictor pulls the shape onto the face. A detection
confirms a track; a track that several detections in a row do not confirm has drifted off
the face and ends at its last confirmed frame.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import dlib
import numpy as np

from lipdub.faces import models
from lipdub.faces.pose import head_pose
from lipdub.media.video import Frame


@dataclass(frozen=True)
class TrackerSettings:
    detect_every: int = 6  # frames between detections (and at every scene cut)
    detect_lag: int = 3  # frames a detection runs beside tracking before it is matched
    detect_long_side: int = 640  # the detector sees frames resized to this long side
    max_upscale: float = 1.5  # small videos are enlarged so small faces reach HOG's 80 px
    min_face_px: int = 40  # faces smaller than this (box side, source pixels) are ignored
    max_misses: int = 2  # detections in a row that may miss a track before it ends
    match_iou: float = 0.3
    cut_threshold: float = 0.35  # share of a 16x9 thumbnail's cells that changed a lot
    embeddings_per_track: int = 4
    embedding_every_ms: float = 1500.0


@dataclass
class Track:
    """One continuous appearance of a face, inside one shot."""

    track_id: int
    frames: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    confirmed_len: int = 0  # frames up to the last detection that confirmed the track
    misses: int = 0
    embeddings: list[np.ndarray] = field(default_factory=list)
    last_embedding_ms: float = -1e9
    thumb_score: float = -1.0
    thumb: np.ndarray | None = None  # padded RGB crop of the best frame so far
    # Detector box relative to the landmarks' box, learnt at detections, so that the
    # predictor is started from a box shaped like the ones it was trained on.
    box_ratio: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    def trim(self) -> None:
        """Drop frames after the last confirmation: they may be a drifted shape.

        Called only for tracks that detections stopped confirming; a track cut short by a
        scene cut or the end of the video keeps its tail.
        """
        n = self.confirmed_len
        del self.frames[n:], self.times[n:], self.landmarks[n:]


def landmark_box(lm: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = lm.min(axis=0)
    x1, y1 = lm.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _rect(box: tuple[float, float, float, float]) -> Any:
    return dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])),
                          int(round(box[3])))


def _shape_array(shape: Any) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class FaceTracker:
    """Streaming tracker: feed frames in order, collect finished tracks."""

    def __init__(self, width: int, height: int, fps: float, settings: TrackerSettings):
        self.s = settings
        self.width, self.height, self.fps = width, height, fps
        self.scale = min(settings.max_upscale, settings.detect_long_side / max(width, height))
        self.detector = models.hog_detector()
        self.predictor = models.landmark_predictor()
        self.encoder = models.face_encoder()
        self.active: list[Track] = []
        self.finished: list[Track] = []
        self._next_id = 0
        self._prev_thumb: np.ndarray | None = None
        self.cuts: list[int] = []
        # HOG runs in a thread (dlib releases the GIL) while the next frames are tracked;
        # its boxes are matched ``detect_lag`` frames later, when faces have moved by a few
        # pixels (the IoU match tolerates that), so detection never stalls tracking.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipdub-hog")
        self._pending: Future[list[tuple[float, float, float, float]]] | None = None
        self._pending_at = 0

    # -- per frame ---------------------------------------------------------------------
    def feed(self, frame: Frame) -> None:
        gray = frame.gray
        cut = self._is_cut(gray)
        if cut:
            self.cuts.append(frame.index)
            self._end_all()
            self._collect()  # boxes from the previous shot are of no use
        for tr in self.active:
            self._follow(tr, gray, frame)
        if self._pending is not None and frame.index - self._pending_at >= self.s.detect_lag:
            late = self._collect()
            if late is not None:
                self._match(late, gray, frame)
        if cut or frame.index == 0:
            # A new shot starts with nobody tracked: detect now, not one frame late.
            self._match(self._hog(gray), gray, frame)
        elif frame.index % self.s.detect_every == 0 and self._pending is None:
            self._pending = self._pool.submit(self._hog, gray.copy())
            self._pending_at = frame.index

    def close(self) -> list[Track]:
        self._collect()
        self._pool.shutdown(wait=True)
        self._end_all()
        return self.finished

    def _collect(self) -> list[tuple[float, float, float, float]] | None:
        if self._pending is None:
            return None
        dets, self._pending = self._pending.result(), None
        return dets

    # -- internals ---------------------------------------------------------------------
    def _is_cut(self, gray: np.ndarray) -> bool:
        # Subsample before the area resize: a cut changes whole regions, not pixels.
        small = cv2.resize(gray[::8, ::8], (16, 9), interpolation=cv2.INTER_AREA).astype(np.int16)
        prev, self._prev_thumb = self._prev_thumb, small
        if prev is None:
            return False
        changed = float(np.mean(np.abs(small - prev) > 40))
        return changed >= self.s.cut_threshold

    def _end(self, tr: Track, lost: bool = False) -> None:
        if lost:
            tr.trim()
        if tr.frames:
            self.finished.append(tr)

    def _end_all(self) -> None:
        for tr in self.active:
            self._end(tr)
        self.active = []

    def _predict(self, gray: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """68 landmarks for the face in ``box``, in full-frame pixels.

        On the frame itself, whatever the face's size: the predictor's cost does not grow
        with the face (it reads a fixed set of pixels), and measured on real 720p-4K
        close-ups (bench/predictor_ab.py) the full-resolution face both ran faster than a
        crop reduced to 200 px (the reduction itself cost more than the prediction) and
        jittered less (second difference of the stable points 0.007-0.008 against 0.010
        inter-ocular distances).
        """
        return _shape_array(self.predictor(gray, _rect(box)))

    def _follow(self, tr: Track, gray: np.ndarray, frame: Frame) -> None:
        x0, y0, x1, y1 = landmark_box(tr.landmarks[-1])
        w, h = x1 - x0, y1 - y0
        r = tr.box_ratio
        box = (x0 + r[0] * w, y0 + r[1] * h, x0 + r[2] * w, y0 + r[3] * h)
        lm = self._predict(gray, box)
        tr.frames.append(frame.index)
        tr.times.append(frame.time_ms)
        tr.landmarks.append(lm)

    def _hog(self, gray: np.ndarray) -> list[tuple[float, float, float, float]]:
        small = cv2.resize(gray, None, fx=self.scale, fy=self.scale,
                           interpolation=cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR)
        dets = [
            (d.left() / self.scale, d.top() / self.scale, d.right() / self.scale,
             d.bottom() / self.scale)
            for d in self.detector(small, 0)
        ]
        return [d for d in dets if min(d[2] - d[0], d[3] - d[1]) >= self.s.min_face_px]

    def _match(self, dets: list[tuple[float, float, float, float]], gray: np.ndarray,
               frame: Frame) -> None:
        # Greedy matching by IoU: faces rarely overlap, so greedy equals optimal here.
        pairs = []
        for ti, tr in enumerate(self.active):
            tb = landmark_box(tr.landmarks[-1])
            for di, d in enumerate(dets):
                pairs.append((iou(tb, d), ti, di))
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        for score, ti, di in pairs:
            if score < self.s.match_iou or ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._confirm(self.active[ti], dets[di], gray, frame)
        still = []
        for ti, tr in enumerate(self.active):
            if ti not in used_t:
                tr.misses += 1
                if tr.misses > self.s.max_misses:
                    self._end(tr, lost=True)
                    continue
            still.append(tr)
        self.active = still
        for di, d in enumerate(dets):
            if di in used_d:
                continue
            if any(iou(landmark_box(t.landmarks[-1]), d) > 0.1 for t in self.active):
                continue  # overlaps a track that the detector placed differently
            tr = Track(track_id=self._next_id)
            self._next_id += 1
            tr.frames.append(frame.index)
            tr.times.append(frame.time_ms)
            tr.landmarks.append(self._predict(gray, d))
            self._confirm(tr, d, gray, frame, new=True)
            self.active.append(tr)

    def _confirm(self, tr: Track, det: tuple[float, float, float, float], gray: np.ndarray,
                 frame: Frame, new: bool = False) -> None:
        tr.misses = 0
        lm = self._predict(gray, det) if not new else tr.landmarks[-1]
        tr.landmarks[-1] = lm  # re-seat the shape on the detector's box
        tr.confirmed_len = len(tr.frames)
        x0, y0, x1, y1 = landmark_box(lm)
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        ratio = ((det[0] - x0) / w, (det[1] - y0) / h, (det[2] - x0) / w, (det[3] - y0) / h)
        tr.box_ratio = ratio if new else tuple(  # type: ignore[assignment]
            0.7 * a + 0.3 * b for a, b in zip(tr.box_ratio, ratio, strict=True)
        )
        want_emb = (
            len(tr.embeddings) < self.s.embeddings_per_track
            and frame.time_ms - tr.last_embedding_ms >= self.s.embedding_every_ms
        )
        score = self._thumb_score(gray, lm)
        if want_emb or score > tr.thumb_score:
            rgb = frame.rgb
            if want_emb:
                shape = self.predictor(gray, _rect(det))  # the encoder wants dlib's own shape
                desc = self.encoder.compute_face_descriptor(np.ascontiguousarray(rgb), shape)
                tr.embeddings.append(np.asarray(desc, dtype=np.float32))
                tr.last_embedding_ms = frame.time_ms
            if score > tr.thumb_score:
                tr.thumb_score = score
                tr.thumb = padded_crop(rgb, (x0, y0, x1, y1), pad=0.45)

    def _thumb_score(self, gray: np.ndarray, lm: np.ndarray) -> float:
        """Big, sharp and frontal wins: size x sharpness x frontalness."""
        x0, y0, x1, y1 = (int(v) for v in landmark_box(lm))
        x0, y0 = max(x0, 0), max(y0, 0)
        crop = gray[y0:y1, x0:x1]
        if crop.size < 64:
            return 0.0
        sharp = float(cv2.Laplacian(crop, cv2.CV_32F).var())
        yaw, pitch, _ = head_pose(lm, self.width, self.height)
        frontal = max(0.0, np.cos(np.radians(yaw))) * max(0.0, np.cos(np.radians(pitch)))
        size = float(np.sqrt(crop.size))
        return size * np.log1p(sharp) * frontal**2


def padded_crop(rgb: np.ndarray, box: tuple[float, float, float, float], pad: float) -> np.ndarray:
    """A square crop around ``box`` with ``pad`` of its size added on each side."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (0.5 + pad)
    h, w = rgb.shape[:2]
    a0, b0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    a1, b1 = int(min(cx + half, w)), int(min(cy + half, h))
    return rgb[b0:b1, a0:a1].copy()

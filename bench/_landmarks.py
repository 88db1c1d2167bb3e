"""The benchmarks' own landmark instrument: dlib HOG + 68-point predictor on every frame.

Shared by bench/quality.py and bench/articulation.py so that both measure with one
instrument, independently of the engine and of its session. Source landmarks are cached
(``source_landmarks``) because the source does not change between runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import dlib
import numpy as np

from lipdub.faces import models

DETECT_SIDE = 480  # frames are downscaled to at most this for the HOG detector only


class Detector:
    """dlib HOG + 68-point predictor on every frame; the largest face wins. When the
    detector misses a frame the previous box is reused for the predictor (counted)."""

    def __init__(self) -> None:
        self.det = dlib.get_frontal_face_detector()  # our own: a detector is per thread
        self.pred = models.landmark_predictor()
        self.prev: object | None = None
        self.misses = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:

        h, w = rgb.shape[:2]
        s = min(1.0, DETECT_SIDE / max(h, w))
        small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        dets = self.det(small, 0)
        if len(dets):
            r = max(dets, key=lambda d: d.area())
            self.prev = dlib.rectangle(
                int(r.left() / s), int(r.top() / s), int(r.right() / s), int(r.bottom() / s)
            )
        else:
            self.misses += 1
        if self.prev is None:
            return np.full((68, 2), np.nan, np.float32)
        sh = self.pred(rgb, self.prev)
        return np.array([[p.x, p.y] for p in sh.parts()], np.float32)


def frames(path: Path, x_range: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Every decoded frame as RGB; ``x_range`` keeps only the columns [x0, x1)."""
    with av.open(str(path)) as c:
        for fr in c.decode(c.streams.video[0]):
            rgb = fr.to_ndarray(format="rgb24")
            if x_range is not None:
                rgb = np.ascontiguousarray(rgb[:, x_range[0] : x_range[1]])
            yield rgb


def source_landmarks(
    video: Path, cache_dir: Path, x_range: tuple[int, int] | None = None
) -> np.ndarray:
    """(N, 68, 2) landmarks of every frame of ``video`` (optionally cropped), cached."""
    tag = "" if x_range is None else f".x{x_range[0]}-{x_range[1]}"
    out = cache_dir / (video.name + tag + ".lm.npy")
    if out.is_file():
        return np.load(out)
    det = Detector()
    arr = np.stack([det(f) for f in frames(video, x_range)])
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(out, arr)
    return arr

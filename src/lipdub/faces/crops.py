"""Lower-face crops that identify keeps while it decodes, for the renderer's exemplar bank.

The renderer needs a few hundred of a person's own mouths (their frames chosen to cover
the person's range). Identify already decodes every frame; keeping those crops then
saves sync a second decode of the whole video. Crops are taken at a working resolution
bounded by the face's size (a 4K close-up is kept at what the bank uses, not at 4K),
JPEG-encoded in a worker thread, and stored with the session.

While tracking, each track keeps crops on a time stride that doubles whenever the pool
outgrows twice the bank's size (so memory does not grow with video length), plus its most
open and most closed mouths so far. When the people are known, :func:`choose_frames`
picks the bank's frames among those candidates with the same rule the renderer used
before.
"""

from __future__ import annotations

import heapq
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lipdub.faces.geometry import interocular, mouth_opening
from lipdub.media.video import Frame
from lipdub.media.yuv import Box, YuvPicture, align, editable

# Crops are reduced so the inter-ocular distance is at most this: a little above the
# bank's canonical cap (render.bank.MAX_CANONICAL_IOD, 110 px) so the bank's own warp
# still reduces, not enlarges. At JPEG quality 92 a crop is a few tens of kB, so a session
# grows by a few MB a face, and the bank built from them is over 40 dB PSNR against one
# built from the decoded video (tests/render/test_bank_sources.py).
WORK_IOD = 120.0
JPEG_QUALITY = 92
BANK_CAP = 240  # entries in a bank (render.engine.ClassicEngine.bank_size's default)
CROPS_FILE = "crops.npz"

log = logging.getLogger(__name__)


def lower_face_window(lm: np.ndarray, width: int, height: int) -> Box:
    """The part of the picture a face's render can touch: the face from the nose bridge
    down, and room below the chin for an opened jaw, with margins that the compositor's
    mask (bounded by the jaw and the nose base) stays inside of."""
    pts = np.concatenate([lm[0:17], lm[27:36]])
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    w, h = x1 - x0, y1 - y0
    return (int(max(x0 - 0.25 * w, 0)), int(max(y0 - 0.25 * h, 0)),
            int(min(x1 + 0.25 * w + 1, width)), int(min(y1 + 0.5 * h + 1, height)))


def window_rgb(frame: Frame, box: Box) -> tuple[np.ndarray, Box]:
    """RGB pixels of ``box`` (grown to even corners) and the box they cover; only that
    window is converted when the frame's planes allow it."""
    f = frame.av_frame
    if editable(f, frame.rotation):
        pic = YuvPicture(f)
        b = pic.window(box)
        return pic.rgb(b), b
    rgb = frame.rgb
    b = align(box, rgb.shape[1], rgb.shape[0])
    return rgb[b[1]:b[3], b[0]:b[2]].copy(), b


def choose_frames(landmarks: np.ndarray, frames: np.ndarray, cap: int) -> np.ndarray:
    """Rows to keep: an even stride through time (natural sequences for smooth picks)
    plus the most open and most closed frames, so the range is covered."""
    n = len(frames)
    if n <= cap:
        return np.arange(n)
    extremes = cap // 8
    opening = mouth_opening(landmarks)
    order = np.argsort(opening)
    keep = set(order[-extremes:].tolist()) | set(order[: extremes // 2].tolist())
    stride = np.linspace(0, n - 1, cap - len(keep)).round().astype(int)
    keep |= set(stride.tolist())
    return np.array(sorted(keep))[:cap]


@dataclass
class FaceCrops:
    """One person's stored crops: frame ``frames[k]``'s pixels from ``origin[k]`` (frame
    pixels, top-left) at ``scale[k]`` crop pixels per frame pixel (x, y), as JPEG."""

    frames: np.ndarray  # (K,) int32, sorted
    origin: np.ndarray  # (K, 2) float32
    scale: np.ndarray  # (K, 2) float32: the sides are rounded apart, so x and y differ
    jpeg: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def image(self, k: int) -> np.ndarray:
        """Crop ``k`` as RGB."""
        bgr = cv2.imdecode(np.frombuffer(self.jpeg[k], np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"stored crop of frame {int(self.frames[k])} is not a JPEG")
        return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def to_frame(self, k: int) -> np.ndarray:
        """2x3 affine from crop ``k``'s pixels to frame pixels (pixel centres: an area
        resize by ``s`` maps crop x to frame (x + 0.5) / s - 0.5)."""
        sx, sy = (float(v) for v in np.broadcast_to(self.scale[k], (2,)))
        ox, oy = (float(v) for v in self.origin[k])
        return np.array([[1 / sx, 0, ox + 0.5 / sx - 0.5],
                         [0, 1 / sy, oy + 0.5 / sy - 0.5]], np.float64)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        sizes = np.array([len(b) for b in self.jpeg], np.int64)
        blob = np.frombuffer(b"".join(self.jpeg), np.uint8) if self.jpeg else np.zeros(0, np.uint8)
        return {f"{prefix}.frames": self.frames.astype(np.int32),
                f"{prefix}.origin": self.origin.astype(np.float32),
                f"{prefix}.scale": self.scale.astype(np.float32),
                f"{prefix}.sizes": sizes, f"{prefix}.jpeg": blob}

    @classmethod
    def from_arrays(cls, z: dict[str, np.ndarray], prefix: str) -> FaceCrops | None:
        if f"{prefix}.frames" not in z:
            return None
        sizes = z[f"{prefix}.sizes"]
        blob = z[f"{prefix}.jpeg"].tobytes()
        ends = np.cumsum(sizes)
        jpeg = [blob[int(e - s):int(e)] for s, e in zip(sizes, ends, strict=True)]
        return cls(frames=z[f"{prefix}.frames"], origin=z[f"{prefix}.origin"],
                   scale=z[f"{prefix}.scale"], jpeg=jpeg)


def save_crops(path: Path, crops: dict[str, FaceCrops]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for fid, c in crops.items():
        arrays.update(c.arrays(fid))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # JPEG does not compress further
    tmp.replace(path)


def load_crops(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@dataclass
class _Pending:
    frame: int
    crop: Future[tuple[bytes, tuple[float, float], tuple[float, float]]]  # JPEG, origin, scale


class _TrackPool:
    """One track's candidates: a doubling time stride plus its extreme mouths."""

    def __init__(self, cap: int, stride: int = 1) -> None:
        self.cap = cap
        self.stride = stride
        self.start: int | None = None
        self.items: dict[int, _Pending] = {}
        self.open: list[tuple[float, int]] = []  # min-heap of the most open mouths
        self.closed: list[tuple[float, int]] = []  # min-heap of -opening: the most closed
        self.n_extreme = max(1, cap // 8)

    def wants(self, frame: int, opening: float) -> bool:
        if self.start is None:
            self.start = frame
        on_stride = (frame - self.start) % self.stride == 0
        return (on_stride or len(self.open) < self.n_extreme or opening > self.open[0][0]
                or len(self.closed) < self.n_extreme // 2 or -opening > self.closed[0][0])

    def add(self, frame: int, opening: float, item: _Pending) -> None:
        self.items[frame] = item
        for heap, key, n in ((self.open, opening, self.n_extreme),
                             (self.closed, -opening, max(1, self.n_extreme // 2))):
            if len(heap) < n:
                heapq.heappush(heap, (key, frame))
            elif key > heap[0][0]:
                heapq.heapreplace(heap, (key, frame))
        if len(self.items) > 2 * self.cap:
            self.stride *= 2
            self._prune()

    def _prune(self) -> None:
        assert self.start is not None
        keep = {f for _, f in self.open} | {f for _, f in self.closed}
        self.items = {f: it for f, it in self.items.items()
                      if (f - self.start) % self.stride == 0 or f in keep}


class CropCollector:
    """Collects candidate crops for every track while identify streams the frames."""

    def __init__(self, cap: int = BANK_CAP, expected_frames: int = 0,
                 max_pending: int = 4) -> None:
        self.cap = cap
        # The stride starts where a track as long as the video would fill the bank with a
        # little to spare (extremes come on top): crops encoded only to be dropped cost
        # identify time.
        self.first_stride = max(1, int(np.ceil(expected_frames / (1.25 * cap))))
        self.pools: dict[int, _TrackPool] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipdub-crops")
        # Frames held by the worker (a 4K frame is 12 MB): bounded.
        self._slots = threading.BoundedSemaphore(max_pending)

    def offer(self, frame: Frame, track_id: int, lm: np.ndarray) -> None:
        """Consider ``frame`` for track ``track_id`` whose landmarks there are ``lm``."""
        pool = self.pools.setdefault(track_id, _TrackPool(self.cap, self.first_stride))
        opening = float(mouth_opening(lm[None])[0])
        if not pool.wants(frame.index, opening):
            return
        box = lower_face_window(lm, *frame.size)
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:  # the face is (nearly) off the picture
            return
        iod = float(interocular(lm))
        scale = min(1.0, WORK_IOD / max(iod, 1.0))
        self._slots.acquire()
        fut = self._pool.submit(self._encode, frame, box, scale)
        pool.add(frame.index, opening, _Pending(frame.index, fut))

    def _encode(self, frame: Frame, box: Box,
                scale: float) -> tuple[bytes, tuple[float, float], tuple[float, float]]:
        try:
            rgb, b = window_rgb(frame, box)
            s = (1.0, 1.0)
            if scale < 1.0:
                h0, w0 = rgb.shape[:2]
                w, h = max(1, round(w0 * scale)), max(1, round(h0 * scale))
                s = (w / w0, h / h0)
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise ValueError("JPEG encoding failed")
            return bytes(buf), (float(b[0]), float(b[1])), s
        finally:
            self._slots.release()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def for_person(self, track_ids: list[int], frames: np.ndarray,
                   landmarks: np.ndarray) -> FaceCrops | None:
        """The bank's crops for one person (their tracks, final frames and smoothed
        landmarks), chosen among the candidates; None when there are none."""
        cand: dict[int, _Pending] = {}
        for tid in track_ids:
            pool = self.pools.get(tid)
            if pool is not None:
                cand.update(pool.items)
        rows = np.array([i for i, f in enumerate(frames.tolist()) if f in cand], np.int64)
        if len(rows) == 0:
            return None
        chosen = rows[choose_frames(landmarks[rows], frames[rows], self.cap)]
        kept, done = [], []
        for r in chosen:
            try:
                done.append(cand[int(frames[r])].crop.result())
                kept.append(r)
            except Exception as e:  # that frame is left out of the bank, the rest stays
                log.warning("crop of frame %d not kept: %s", int(frames[r]), e)
        if not done:
            return None
        # Geometry is per crop: the window follows the face, the scale its size.
        return FaceCrops(frames=frames[np.array(kept, np.int64)].astype(np.int32),
                         origin=np.array([o for _, o, _ in done], np.float32),
                         scale=np.array([sc for _, _, sc in done], np.float32),
                         jpeg=[j for j, _, _ in done])


__all__ = ["CROPS_FILE", "CropCollector", "FaceCrops", "choose_frames", "load_crops",
           "lower_face_window", "save_crops", "window_rgb"]

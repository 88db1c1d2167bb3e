"""A rendered region checked against the source frame's same region and the previous
output: colour, structure, sudden jumps beyond what the source itself does. A patch that
fails is rendered again with the last entry that passed, or keeps the source's pixels.

Everything works on the region reduced to a few dozen pixels (``SmallLab``), so a check
costs little at any video resolution.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np


@functools.lru_cache(maxsize=64)
def disc(r: int) -> np.ndarray:
    """Elliptic structuring element of radius ``r`` (one per face size: made once)."""
    d = np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    d.flags.writeable = False  # shared by every caller
    return d


def roi_box(landmarks: np.ndarray, frame_shape: tuple[int, ...],
            margin: float = 0.15) -> tuple[int, int, int, int]:
    """Lower-face box (x0, y0, x1, y1) from a face's frame landmarks: where
    :func:`check_patch` looks. It follows the face, so successive frames' boxes hold the
    same part of it."""
    lm = np.asarray(landmarks, np.float64)
    pts = np.concatenate([lm[2:15], lm[29:36]])
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = frame_shape[:2]
    return (int(max(np.floor(x0 - mx), 0)), int(max(np.floor(y0 - my), 0)),
            int(min(np.ceil(x1 + mx), w)), int(min(np.ceil(y1 + my), h)))


_SIDE = 48  # check_patch works on this many pixels along the ROI's longer side


def _reduce(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``x`` area-resized to ``size`` (w, h), thinned to ~2x that first: an area resize
    reads every pixel, and at 1080p that was a millisecond a call for 48 output columns."""
    step = max(1, min(x.shape[0] // (2 * size[1]), x.shape[1] // (2 * size[0])))
    return np.asarray(cv2.resize(np.ascontiguousarray(x[::step, ::step]), size,
                                 interpolation=cv2.INTER_AREA))


def _small_lab(img: np.ndarray | SmallLab, size: tuple[int, int]) -> np.ndarray:
    if isinstance(img, SmallLab):  # reduced already: at most resize it
        if img.lab.shape[1::-1] == size:
            return img.lab
        return np.asarray(cv2.resize(img.lab, size, interpolation=cv2.INTER_LINEAR))
    x = _reduce(np.asarray(img), size)
    x = cv2.GaussianBlur(x, (0, 0), 0.8)
    return cv2.cvtColor(x, cv2.COLOR_RGB2LAB).astype(np.float32)


@dataclass(frozen=True)
class SmallLab:
    """A region already reduced the way :func:`check_patch` compares it: pass one as a
    previous ROI to skip reducing the same pixels again every frame."""

    lab: np.ndarray
    shape: tuple[int, int]  # (h, w) of the region it was reduced from

    @classmethod
    def of(cls, roi: np.ndarray) -> SmallLab:
        h, w = roi.shape[:2]
        return cls(_small_lab(roi, _small_size(h, w)), (h, w))


def _small_size(h: int, w: int) -> tuple[int, int]:
    f = _SIDE / max(h, w)
    return max(4, round(w * f)), max(4, round(h * f))


@dataclass(frozen=True)
class PatchLimits:
    """Thresholds of :func:`check_patch` (Lab units: 8-bit OpenCV Lab)."""

    colour: float = 22.0  # mean colour shift over the blended region, away from the mouth
    # (14 refused real frames: a neutral mouth on a broad smile shades the cheeks 15-21)
    changed: float = 0.45  # share of the region away from the mouth that changed a lot
    changed_delta: float = 22.0  # what "a lot" means per pixel
    jump: float = 2.5  # output change between frames, over the source's own change
    jump_margin: float = 6.0  # ... plus this much (mouth motion is what we add)


def check_patch(rendered_roi: np.ndarray | SmallLab, source_roi: np.ndarray | SmallLab,
                prev_rendered_roi: np.ndarray | SmallLab | None, mask: np.ndarray, *,
                prev_source_roi: np.ndarray | SmallLab | None = None,
                lips: np.ndarray | None = None,
                new_lips: np.ndarray | None = None,
                limits: PatchLimits | None = None) -> tuple[bool, str]:
    """Is a rendered region plausible? Returns (ok, reason); reason is "" when ok.

    ``rendered_roi`` and ``source_roi`` are the same box of the output and of the source
    frame (H, W, 3 uint8 RGB); ``mask`` (H, W) the blend weight there (0..1). The previous
    frame's ROIs may be cut with that frame's own :func:`roi_box` (any size: everything is
    compared at a small fixed size, so a box that follows the face is what fits best).
    ``lips`` (>= 20 points, ROI pixels: the target's landmarks 48-67) marks where a change
    is expected: the structure check only looks away from the mouth and jaw drop.
    ``new_lips`` (20 points, ROI pixels): where the pasted mouth's lips landed. Its mouth
    is meant to change the frame too: wide lips pasted over pursed ones reach past the
    old mouth's corners, and judged as "the face around the mouth" that read as damage
    (a third of KatieHill's rejected frames, each one the source's mouth flashing in).

    Checks, all on the masked region away from the mouth when ``lips`` is given (the mouth
    itself is meant to change): colour (the patch's mean Lab against the source's);
    structure (the share that differs from the source by more than ``changed_delta``: a
    smear, a stretched cheek, a pasted hand); jump (the output changed from the previous
    output far more than the source did).
    """
    lim = limits or PatchLimits()
    h, w = source_roi.shape[:2]  # SmallLab keeps the shape of the region it came from
    size = _small_size(h, w)
    f = size[0] / w
    r = _small_lab(rendered_roi, size)
    s = _small_lab(source_roi, size)
    m = _reduce(np.asarray(mask, np.float32), size)
    core = m > 0.5
    if np.count_nonzero(core) < 8:
        return True, ""
    # OpenCV calls on these 48-pixel images, not NumPy's: a per-pixel norm over a
    # 3-long axis and boolean selections cost NumPy more than the whole reduction.
    d = _lab_distance(r, s)
    away = core
    if lips is not None:
        lp = np.asarray(lips, np.float64)[-20:] * f
        width = float(np.ptp(lp[:, 0]))
        mouth = np.zeros(core.shape, np.uint8)
        hull = cv2.convexHull(lp.astype(np.float32))
        # Lips, their surroundings, and room below for the jaw to drop.
        drop = hull + np.array([0.0, 0.45 * width], np.float32)
        cv2.fillConvexPoly(mouth, cv2.convexHull(np.concatenate([hull, drop])).astype(np.int32),
                           1)
        grown = cv2.dilate(mouth, disc(max(1, int(0.2 * width))))
        if new_lips is not None:
            # The pasted lips themselves, and a rim (their edge is where the blend shows);
            # no more: a hand over mouth and cheeks must still read as one.
            nl = np.asarray(new_lips, np.float64)[-20:] * f
            pasted = np.zeros(core.shape, np.uint8)
            cv2.fillConvexPoly(pasted, cv2.convexHull(nl.astype(np.float32)).astype(np.int32), 1)
            grown = cv2.max(grown, cv2.dilate(pasted, disc(max(1, int(0.1 * width)))))
        away = core & (grown == 0)
    n_away = int(np.count_nonzero(away))
    # Colour and jumps are judged away from the mouth too: a mouth that closes after an
    # open vowel changes its own region's colour and look at once, and must.
    judged = (away if n_away >= 8 else core).view(np.uint8)
    shift = float(np.linalg.norm(np.subtract(cv2.mean(r, judged)[:3], cv2.mean(s, judged)[:3])))
    if shift > lim.colour:
        return False, f"colour shift {shift:.1f}"
    if n_away >= 8:
        changed = int(np.count_nonzero((d > lim.changed_delta) & away)) / n_away
        if changed > lim.changed:
            return False, f"structure: {changed:.0%} of the face around the mouth changed"
    if prev_rendered_roi is not None:
        pr = _small_lab(prev_rendered_roi, size)
        jump_r = cv2.mean(_lab_distance(r, pr), judged)[0]
        if prev_source_roi is not None:
            ps = _small_lab(prev_source_roi, size)
            jump_s = cv2.mean(_lab_distance(s, ps), judged)[0]
        else:
            jump_s = 0.0
        if jump_r > lim.jump * jump_s + lim.jump_margin:
            return False, f"jump {jump_r:.1f} (source {jump_s:.1f})"
    return True, ""


_SUM3 = np.ones((1, 3), np.float32)


def _lab_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean distance between two float32 (H, W, 3) images."""
    diff = cv2.subtract(a, b)
    return np.asarray(cv2.sqrt(cv2.transform(cv2.multiply(diff, diff), _SUM3)))

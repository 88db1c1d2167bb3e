"""Covered mouths: frames where something is in front of the lower face (a hand, a
microphone, a cup), found while identify decodes, so the renderer leaves them untouched.

The shape predictor always returns a mouth, covered or not: on a hand it draws lips where
it guesses them, and a render there paints a mouth over the hand. So the lower face is
looked at, not its landmarks. Each tracked frame's lower face is sampled into a small
patch in the face's own frame of reference (the eye line and the inter-ocular distance:
a nod or a step toward the camera does not move it), as Lab colour and local contrast.
Per person, each pixel's robust median and spread over all their frames say what their
chin and cheeks look like; a frame where a blob of the region (the lips and the open
mouth left out: they change by design) is far from it is covered. That is the bank's
occlusion test (render/vet.py), made per frame of the video instead of per bank entry.
Spans are grown by a couple of frames (an occluder arrives over a frame or two before it
is found) and short gaps closed, then the renderer fades out before and in after them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipdub.faces.crops import window_rgb
from lipdub.media.video import Frame

# The patch: x in [-1.1, 1.1] and y in [0.45, 2.05] inter-ocular distances from the eyes'
# midpoint (x along the eye line, y down): from below the nose bridge to under the chin.
_X0, _X1, _Y0, _Y1 = -1.1, 1.1, 0.45, 2.05
PATCH_W, PATCH_H = 36, 26
_LOWER = np.r_[2:15, 31:36]  # jaw (cheek to cheek) and the nose base: the lower face
Z = 3.0  # a pixel is unlike the person's median beyond this many spreads (as the bank's)
MIN_SPREAD = 6.0  # Lab / contrast units: the noise floor of a steady pixel
COVERED_SHARE = 0.30  # of the region, in blobs: a covered frame
GROW = 2  # frames added on each side of a covered span
BRIDGE = 4  # covered spans closer than this many frames are one


def _frame_of(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The eyes' midpoint, the unit vector along the eye line, and the inter-ocular
    distance of 68 landmarks."""
    left, right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    d = right - left
    iod = float(np.hypot(*d))
    return (left + right) / 2, d / max(iod, 1e-6), iod


def canonical(lm: np.ndarray) -> np.ndarray:
    """Landmarks in patch pixels."""
    c, u, iod = _frame_of(lm)
    v = np.array([-u[1], u[0]])
    rel = (lm - c) / max(iod, 1e-6)
    x, y = rel @ u, rel @ v
    return np.stack([(x - _X0) / (_X1 - _X0) * PATCH_W, (y - _Y0) / (_Y1 - _Y0) * PATCH_H],
                    axis=1).astype(np.float32)


def _features(rgb: np.ndarray) -> np.ndarray:
    """Lab colour and local contrast of a small patch (as render/vet.py's appearance)."""
    lab = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), (0, 0), 0.8)
    g = lab[..., 0].astype(np.float32)
    grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3),
                    cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    grad = np.clip(0.5 * cv2.GaussianBlur(grad, (0, 0), 0.8), 0, 255)
    return np.concatenate([lab, grad.astype(np.uint8)[..., None]], axis=2)


@dataclass
class _Seen:
    feats: np.ndarray  # (PATCH_H, PATCH_W, 4) uint8
    lm: np.ndarray  # (68, 2) patch pixels


class MouthCover:
    """Collects each tracked frame's lower-face patch while identify streams; then says,
    per person, which of their frames have the mouth covered."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, int], _Seen] = {}  # (track id, frame) -> patch

    def offer(self, frame: Frame, track_id: int, lm: np.ndarray) -> None:
        c, u, iod = _frame_of(lm)
        if iod < 8:  # too small to judge
            return
        w, h = frame.size
        v = np.array([-u[1], u[0]])
        corners = np.array([c + iod * (x * u + y * v) for x, y in
                            ((_X0, _Y0), (_X1, _Y0), (_X0, _Y1), (_X1, _Y1))])
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) // 2 * 2
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) // 2 * 2 + 2
        x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return
        # The window reduced first (to 1.5x the patch's resolution), then converted and
        # turned: a few thousand pixels a frame, not the window's hundred thousand.
        k = min(1.0, 1.5 * PATCH_W / (iod * (_X1 - _X0)))
        size = (max(int((x1 - x0) * k), 2), max(int((y1 - y0) * k), 2))
        planes = frame.planes()
        if planes is not None:
            ys, us, vs = planes
            ycc = cv2.merge([cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in (
                ys[y0:y1, x0:x1], vs[y0 // 2:y1 // 2, x0 // 2:x1 // 2],
                us[y0 // 2:y1 // 2, x0 // 2:x1 // 2])])
            small = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
        else:  # a raw frame (not from the decoder's plain stream)
            rgb, (x0, y0, _, _) = window_rgb(frame, (x0, y0, x1, y1))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        sk = np.array([size[0] / (x1 - x0), size[1] / (y1 - y0)])
        # Patch pixel (px, py) -> reduced-window pixel, from the patch corner (_X0, _Y0).
        sx, sy = iod * (_X1 - _X0) / PATCH_W, iod * (_Y1 - _Y0) / PATCH_H
        o = (c + iod * (_X0 * u + _Y0 * v) - np.array([x0, y0], np.float64)) * sk
        m = np.array([[u[0] * sx * sk[0], v[0] * sy * sk[0], o[0]],
                      [u[1] * sx * sk[1], v[1] * sy * sk[1], o[1]]])
        patch = cv2.warpAffine(small, m, (PATCH_W, PATCH_H),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
        self._seen[(track_id, frame.index)] = _Seen(_features(patch), canonical(lm))

    def covered(self, track_ids: list[int], frames: np.ndarray) -> np.ndarray:
        """Per frame of a person (their tracks ``track_ids``, their ``frames`` in order):
        True where the mouth is covered, spans grown and bridged."""
        ids = set(track_ids)
        by_frame = {f: s for (t, f), s in self._seen.items() if t in ids}
        rows = [i for i, f in enumerate(frames.tolist()) if f in by_frame]
        share = np.zeros(len(frames))
        if len(rows) < 10:
            return np.zeros(len(frames), bool)
        seen = [by_frame[int(frames[i])] for i in rows]
        feats = np.stack([s.feats for s in seen]).astype(np.float32)
        pick = np.linspace(0, len(feats) - 1, min(len(feats), 96)).round().astype(int)
        med = np.median(feats[pick], axis=0)
        spread = np.maximum(1.4826 * np.median(np.abs(feats[pick] - med), axis=0), MIN_SPREAD)
        k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        for i, s in zip(rows, seen, strict=True):
            reg = np.zeros((PATCH_H, PATCH_W), np.uint8)
            cv2.fillConvexPoly(reg, cv2.convexHull(s.lm[_LOWER].round().astype(np.int32)), 1)
            lips = cv2.convexHull(s.lm[48:60].round().astype(np.int32))
            cv2.fillConvexPoly(reg, lips, 0)
            cv2.polylines(reg, [lips], True, 0, thickness=2)
            sel = reg.astype(bool)
            if not sel.any():
                continue
            z = (np.abs(s.feats.astype(np.float32) - med) / spread).max(axis=2)
            blobs = cv2.morphologyEx((z > Z).astype(np.uint8), cv2.MORPH_OPEN, k3)
            share[i] = float(blobs[sel].mean())
        return grow_spans(share > COVERED_SHARE, frames)

    def close(self) -> None:
        self._seen.clear()


def grow_spans(flag: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """``flag`` (one per row of ``frames``) with runs grown by GROW frames and runs less
    than BRIDGE frames apart joined (in frame numbers: a person's rows may have gaps)."""
    out = flag.copy()
    hit = frames[flag]
    if not len(hit):
        return out
    for f in hit:
        out |= np.abs(frames - f) <= GROW
    on = frames[out]
    for a, b in zip(on[:-1], on[1:], strict=True):
        if 1 < b - a <= BRIDGE:
            out |= (frames > a) & (frames < b)
    return out


def covered_spans(frames: np.ndarray, covered: np.ndarray, times: np.ndarray,
                  frame_ms: float) -> list[tuple[int, int]]:
    """The covered rows as time spans (ms), one per run of consecutive frames."""
    spans: list[tuple[int, int]] = []
    start = prev = None
    for f in frames[covered].tolist():
        if prev is not None and f == prev + 1:
            prev = f
            continue
        if start is not None and prev is not None:
            spans.append((start, prev))
        start = prev = f
    if start is not None and prev is not None:
        spans.append((start, prev))

    def t(i: int) -> float:
        return float(times[i]) if i < len(times) else i * frame_ms

    return [(int(round(t(a))), int(round(t(b) + frame_ms))) for a, b in spans]


__all__ = ["MouthCover", "canonical", "covered_spans", "grow_spans"]

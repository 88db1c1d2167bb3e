"""Put a bank entry's lower face into a frame: warp, open further if needed, match colour,
blend with a feathered mask.

All geometry is done in the person's canonical frame and brought into the target frame
with one affine warp, limited to the region of interest, so each face costs a few small
warps per frame whatever the video's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipdub.render.bank import Bank

# Jaw points that bound the mask at the sides and below (cheek to cheek under the chin).
_JAW = np.arange(3, 14)
_NOSE_BASE = np.array([31, 32, 33, 34, 35])


@dataclass
class ColourState:
    """Per-face colour gains, smoothed over time so the correction itself cannot flicker."""

    gain: np.ndarray | None = None

    def update(self, g: np.ndarray, keep: float = 0.7) -> np.ndarray:
        self.gain = g if self.gain is None else keep * self.gain + (1 - keep) * g
        return self.gain


# The mask is smooth by design, so it is built at half resolution: erosion and blur there
# cost a quarter, and the warp into the frame interpolates it back up.
MASK_SCALE = 0.5


def lower_face_mask(canon_lm: np.ndarray, entry_lm: np.ndarray, size: tuple[int, int],
                    feather: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Float mask at ``MASK_SCALE`` of the canonical frame covering the lower face of both
    shapes, and its bounding box (x0, y0, x1, y1) in canonical pixels.

    The sides stay inside the face contour (skin on both sides of the seam); the bottom
    reaches below the lower of the two chins, so an opened jaw is covered whole.
    """
    cx = float(canon_lm[_NOSE_BASE, 0].mean())
    pts = []
    for lm in (canon_lm, entry_lm):
        jaw = lm[_JAW].copy()
        jaw[:, 0] = cx + (jaw[:, 0] - cx) * 0.88
        pts.append(jaw)
        nose = lm[_NOSE_BASE].copy()
        nose[:, 1] += 0.15 * (lm[51, 1] - lm[33, 1])  # just under the nostrils
        pts.append(nose)
    chin = max(canon_lm[8, 1], entry_lm[8, 1])
    face_h = chin - float(canon_lm[27, 1])
    pts.append(np.array([[cx, chin + 0.04 * face_h]]))
    hull = cv2.convexHull(np.concatenate(pts).astype(np.float32))
    w, h = size
    sw, sh = int(np.ceil(w * MASK_SCALE)), int(np.ceil(h * MASK_SCALE))
    mask = np.zeros((sh, sw), np.uint8)
    cv2.fillConvexPoly(mask, (hull * MASK_SCALE).astype(np.int32), 255)
    r = max(1, int(feather * MASK_SCALE))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    inner = cv2.erode(mask, kernel)
    soft = cv2.GaussianBlur(inner.astype(np.float32) / 255.0, (0, 0), max(r / 2.0, 0.5))
    x, y, bw, bh = cv2.boundingRect(hull.astype(np.int32))
    return np.asarray(soft), (x, y, x + bw, y + bh)


def open_further(patch: np.ndarray, lm: np.ndarray, extra_px: float,
                 interior: np.ndarray) -> np.ndarray:
    """Geometric fallback: drop the lower lip and jaw by ``extra_px`` and fill the gap with
    the inside of a mouth, for shapes the person never made in the source."""
    if extra_px < 0.5:
        return patch
    h, w = patch.shape[:2]
    y_c = float(lm[[61, 62, 63, 65, 66, 67], 1].mean())  # the line between the lips
    chin = float(lm[8, 1])
    fade_end = chin + 0.6 * max(chin - y_c, 1.0)
    x_l, x_r = float(lm[48, 0]), float(lm[54, 0])
    cx, half = (x_l + x_r) / 2, max((x_r - x_l) / 2, 1.0)
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    # The jaw hinges: full drop under the mouth, fading towards the cheeks.
    wx = np.clip(1.0 - ((xs - cx) / (2.2 * half)) ** 2, 0.0, 1.0)
    sy = np.where(ys < y_c, 0.0, np.where(ys <= chin, 1.0,
                                          np.clip((fade_end - ys) / (fade_end - chin), 0, 1)))
    disp = extra_px * sy[:, None] * wx[None, :]
    map_x = np.broadcast_to(xs[None, :], (h, w)).astype(np.float32)
    map_y = (ys[:, None] - disp).astype(np.float32)
    out = cv2.remap(patch, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # Pixels that now sample from above the lip line are the newly opened gap.
    inner_w = np.clip(1.0 - ((xs - cx) / (0.95 * half)) ** 2, 0.0, 1.0)
    gap = (ys[:, None] >= y_c) & (map_y < y_c) & (inner_w[None, :] > 0.05)
    if gap.any():
        shade = (0.55 + 0.45 * inner_w)[None, :, None]  # darker towards the corners
        fill = np.broadcast_to(interior[None, None, :] * shade, (h, w, 3))
        a = cv2.GaussianBlur(gap.astype(np.float32), (0, 0), 1.2)[..., None]
        out = (out * (1 - a) + fill * a).astype(np.uint8)
    return out


class Compositor:
    """Blends bank entries into frames for one face."""

    def __init__(self, bank: Bank) -> None:
        self.bank = bank
        self.colour = ColourState()
        iod = np.linalg.norm(bank.canonical.template[42:48].mean(0)
                             - bank.canonical.template[36:42].mean(0))
        self.iod = float(iod)
        self.feather = max(3.0, 0.12 * self.iod)
        self.interior = self._interior_colour()
        self.max_open = float(bank.opening.max())

    def _interior_colour(self) -> np.ndarray:
        k = int(np.argmax(self.bank.opening))
        if self.bank.opening[k] < 0.08:
            return np.array([60.0, 30.0, 30.0])
        poly = self.bank.landmarks[k][60:68].astype(np.int32)
        m = np.zeros(self.bank.patches.shape[1:3], np.uint8)
        cv2.fillConvexPoly(m, poly, 1)
        pix = self.bank.patches[k][m.astype(bool)]
        return pix.mean(axis=0).astype(np.float64) if len(pix) else np.array([60.0, 30, 30])

    def render(self, frame: np.ndarray, target_lm: np.ndarray, entry: int, alpha: float,
               want_open: float) -> tuple[int, int, int, int] | None:
        """Blend ``entry`` into ``frame`` (in place) over the face with landmarks
        ``target_lm``; returns the changed region (x0, y0, x1, y1) or None."""
        if alpha <= 0.0:
            return None
        b = self.bank
        canon = b.canonical
        to_c = canon.to_canonical(target_lm)
        a2 = np.vstack([to_c, [0, 0, 1]])
        from_c = np.linalg.inv(a2)[:2]
        t_canon = target_lm @ to_c[:, :2].T + to_c[:, 2]
        patch = b.patches[entry]
        e_lm = b.landmarks[entry]
        # Geometric opening only where the bank lacks the shape (the person never opened
        # this wide in the source); smaller mismatches are the selection's trade-offs, and
        # stretching a real mouth for them would only add artefacts.
        extra = (want_open - float(b.opening[entry])) * self.iod
        if want_open > 1.05 * self.max_open and extra > 0.02 * self.iod:
            patch = open_further(patch, e_lm, extra, self.interior)
            e_lm = e_lm.copy()
            e_lm[[56, 57, 58, 65, 66, 67, 7, 8, 9], 1] += extra
        mask, (bx0, by0, bx1, by1) = lower_face_mask(t_canon, e_lm, canon.size, self.feather)
        # Region of interest in the frame: the mask's bounding box, warped.
        corners = np.array([[bx0, by0], [bx1, by0], [bx0, by1], [bx1, by1]], np.float64)
        fc = corners @ from_c[:, :2].T + from_c[:, 2]
        h, w = frame.shape[:2]
        x0 = int(max(np.floor(fc[:, 0].min()) - 2, 0))
        y0 = int(max(np.floor(fc[:, 1].min()) - 2, 0))
        x1 = int(min(np.ceil(fc[:, 0].max()) + 2, w))
        y1 = int(min(np.ceil(fc[:, 1].max()) + 2, h))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        m = from_c.copy()
        m[:, 2] -= (x0, y0)
        roi = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(patch, m, roi, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        m_mask = m.copy()
        m_mask[:, :2] /= MASK_SCALE  # half-resolution mask pixels -> canonical pixels
        wm = cv2.warpAffine(mask, m_mask, roi, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) * alpha
        region = frame[y0:y1, x0:x1].astype(np.float32)
        ring = (wm > 0.05) & (wm < 0.7)
        if ring.sum() > 20:
            g = (region[ring].mean(0) + 1.0) / (warped[ring].mean(0) + 1.0)
            g = self.colour.update(np.clip(g, 0.8, 1.25))
            warped *= g[None, None, :]
        out = region * (1 - wm[..., None]) + warped * wm[..., None]
        frame[y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        return x0, y0, x1, y1

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
from lipdub.render.patch_check import disc
from lipdub.render.sharpness import sharpen_amount

# Jaw points that bound the mask at the sides and below (cheek to cheek under the chin).
_JAW = np.arange(3, 14)
_NOSE_BASE = np.array([31, 32, 33, 34, 35])
# Points an entry is registered on: nose base and the upper lip's outer edge.
_UPPER_REF = np.array([31, 32, 33, 34, 35, 49, 50, 51, 52, 53])


@dataclass
class ColourState:
    """Per-face colour gains, smoothed over time so the correction itself cannot flicker."""

    gain: np.ndarray | None = None

    def update(self, g: np.ndarray, keep: float = 0.7) -> np.ndarray:
        self.gain = g if self.gain is None else keep * self.gain + (1 - keep) * g
        return self.gain


# Below these the chosen entry is close enough: reshaping a real mouth for small misses
# would only add artefacts. Opening in geometry units (inner-lip gap / IOD), width as a
# ratio.
_CLOSE_TOLERANCE = 0.02
_SHARP_EVERY = 4
# The lips as sharp as the source's, no more: the unsharp amount gives back what the way
# from a frame to a bank entry and back takes (see Compositor._calibrate), measured on one
# and the same mouth. Matched between the entry and the frame it lands in, on the whole
# region (mostly skin) at 1.2x, the lips came out 1.3-1.5x the source's on independent
# checks; on the lips of both, 1.0-1.3x (bench/articulation.py): the frame's own mouth
# (teeth, a dark lip line) set the target, and the entry's lips, which cover it, were
# sharpened to it (4-5x where the frame showed teeth, tests/render/test_sharpness.py);
# on the skin around the lips, 0.75-1.2x, and 1.6x on vasp's small face. Crisp lips on a
# soft face read as a seam (issue 20).
_SHARP_TARGET = 1.0
_OUTER_LIP = np.arange(48, 60)
_SHARP_KEEP = 0.5  # of the held amount at each new calibration
_WIDTH_TOLERANCE = 0.04

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
    inner = cv2.erode(mask, disc(r))
    soft = cv2.GaussianBlur(np.multiply(inner, np.float32(1 / 255), dtype=np.float32), (0, 0),
                            max(r / 2.0, 0.5))
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
    out = cv2.remap(patch, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    # Pixels that now sample from above the lip line are the newly opened gap.
    inner_w = np.clip(1.0 - ((xs - cx) / (0.95 * half)) ** 2, 0.0, 1.0)
    gap = (ys[:, None] >= y_c) & (map_y < y_c) & (inner_w[None, :] > 0.05)
    if gap.any():
        shade = (0.55 + 0.45 * inner_w)[None, :, None]  # darker towards the corners
        fill = np.broadcast_to(interior[None, None, :] * shade, (h, w, 3))
        a = cv2.GaussianBlur(gap.astype(np.float32), (0, 0), 1.2)[..., None]
        out = (out * (1 - a) + fill * a).astype(np.uint8)
    return out


# The frame's chin may sit this far (in eye distances) below the entry's before the entry
# is stretched down to it: a few pixels are the jaw's own play, hidden by the feather.
_CHIN_TOLERANCE = 0.03


def keep_chin(patch: np.ndarray, lm: np.ndarray, drop_px: float) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Stretch the skin between the entry's lower lip and its chin down by ``drop_px``, so
    its chin lands on the frame's own (which is lower: the person's jaw was open there).

    Pasting a nearly closed mouth, jaw and all, over a frame whose jaw hangs open (a wide
    smile, a laugh) left the frame's chin showing under the entry's: a swollen, doubled
    chin and a seam along the jaw (issue 20). The lips keep the shape the speech wants;
    the jaw line stays where the person's is. The stretch is full under the mouth and
    fades toward the cheeks, as the jaw hinges; everything below the chin moves with it.
    Returns the patch and its moved landmarks.
    """
    lm = np.asarray(lm, np.float32)
    if drop_px < 0.5:
        return patch, lm
    h, w = patch.shape[:2]
    y_lip = float(lm[57, 1])  # the lower lip's outer edge: nothing above it moves
    chin = float(lm[8, 1])
    span = max(chin - y_lip, 1.0)
    x_l, x_r = float(lm[48, 0]), float(lm[54, 0])
    cx, half = (x_l + x_r) / 2, max((x_r - x_l) / 2, 1.0)
    x0, x1 = max(int(np.floor(cx - 3.0 * half)), 0), min(int(np.ceil(cx + 3.0 * half)) + 1, w)
    y0 = max(int(np.floor(y_lip)), 0)
    if x1 <= x0 or y0 >= h:
        return patch, lm
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, h, dtype=np.float32)
    wx = np.clip((2.6 * half - np.abs(xs - cx)) / (1.2 * half), 0.0, 1.0)
    # Destination row y samples source row y - d(y): d grows from 0 at the lip to the
    # whole drop at the (moved) chin, and stays there below.
    d = drop_px * np.clip((ys - y_lip) / (span + drop_px), 0.0, 1.0)
    map_x = np.broadcast_to(xs[None, :], (ys.size, xs.size)).astype(np.float32)
    map_y = (ys[:, None] - d[:, None] * wx[None, :]).astype(np.float32)
    out = patch.copy()
    out[y0:, x0:x1] = cv2.remap(patch, map_x, map_y, cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    new_lm = lm.copy()
    for j in range(2, 15):  # the jaw contour moves with the skin under it
        if lm[j, 1] > y_lip:
            fx = float(np.clip((2.6 * half - abs(lm[j, 0] - cx)) / (1.2 * half), 0.0, 1.0))
            new_lm[j, 1] += drop_px * fx * min((lm[j, 1] - y_lip) / span, 1.0)
    return out, new_lm


# Landmarks that ride on the lower lip and the jaw when the mouth closes or opens.
_LOWER_LIP_JAW = np.array([5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59, 64, 65, 66, 67, 60])
_LIPS = np.arange(48, 68)


def close_and_narrow(patch: np.ndarray, lm: np.ndarray, close_px: float,
                     width_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Make a shape the bank lacks from its nearest entry, in one remap: raise the lower
    lip and jaw by ``close_px`` (up to the lips meeting) and scale the mouth's width by
    ``width_scale`` about its centre (< 1 rounds, > 1 spreads). Returns the patch and its
    moved landmarks; the patch is ``patch`` itself when no pixel moves (read it only).

    Closing lifts everything under the upper lip's inner edge, as the jaw does, so the
    lower lip meets the upper one and the inside of the mouth disappears between them;
    the lift fades out below the chin. The width change is strongest on the lips and
    fades out over the cheeks, so the face's outline does not move.
    """
    h, w = patch.shape[:2]
    lm = np.asarray(lm, np.float32)
    y_u = float(lm[[61, 62, 63], 1].mean())
    y_l = float(lm[[65, 66, 67], 1].mean())
    close_px = float(np.clip(close_px, 0.0, max(y_l - y_u, 0.0)))
    chin = float(lm[8, 1])
    fade_end = chin + 0.6 * max(chin - y_u, 1.0)
    x_l, x_r = float(lm[48, 0]), float(lm[54, 0])
    cx, half = (x_l + x_r) / 2, max((x_r - x_l) / 2, 1.0)
    my = float(lm[_LIPS, 1].mean())
    lip_h = max(float(lm[57, 1] - lm[51, 1]), 2.0)
    closing = close_px >= 0.5
    widening = abs(width_scale - 1.0) > 0.01
    y_lip = float(lm[57, 1])
    at_chin = 0.35
    new_lm = lm.copy()
    if closing:
        new_lm[_LOWER_LIP_JAW[7:], 1] -= close_px  # lower lip
        new_lm[_LOWER_LIP_JAW[:7], 1] -= at_chin * close_px  # jaw line
    if widening:
        new_lm[_LIPS, 0] = cx + (new_lm[_LIPS, 0] - cx) * width_scale
    # Only a box around the mouth moves (both fields are exactly zero outside it), and a
    # cubic remap at whole-pixel positions returns the pixels as they are: the maps and
    # the remap cover that box, not the whole patch.
    reach = 2.4 * half
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, w)
    y0, y1 = h, 0
    if closing:  # the lift reaches the lower lip's edge, and fades out below the chin
        y0, y1 = int(np.floor(y_u)), int(np.ceil(max(fade_end, y_lip))) + 1
    if widening:
        band = 1.6 * lip_h + 1.0
        y0, y1 = min(y0, int(np.floor(my - band))), max(y1, int(np.ceil(my + band)) + 1)
    y0, y1 = max(y0, 0), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return patch, new_lm  # nothing to move (the caller's own array: read it only)
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    bh, bw = y1 - y0, x1 - x0
    map_x = np.broadcast_to(xs[None, :], (bh, bw)).astype(np.float32).copy()
    map_y = np.broadcast_to(ys[:, None], (bh, bw)).astype(np.float32).copy()
    if closing:
        wx = np.clip((2.2 * half - np.abs(xs - cx)) / half, 0.0, 1.0)
        # The lips do most of the closing: the whole lift up to the lower lip's outer
        # edge, then less and less down to the chin (a third of it there), none below.
        # Lifting the chin by the whole gap would bare the neck's shadow under it.
        sy = np.where(ys < y_u, 0.0, np.where(
            ys <= y_lip, 1.0, np.where(
                ys <= chin,
                1.0 - (1.0 - at_chin) * (ys - y_lip) / max(chin - y_lip, 1.0),
                at_chin * np.clip((fade_end - ys) / max(fade_end - chin, 1.0), 0, 1))))
        map_y += close_px * sy[:, None] * wx[None, :]
    if widening:
        # Horizontal: full inside the corners, none from 2.4 half-widths out; vertical:
        # a band around the lips.
        dx = xs - cx
        wx = np.clip((2.4 * half - np.abs(dx)) / (1.2 * half), 0.0, 1.0)
        wy = np.clip(1.0 - ((ys - my) / (1.6 * lip_h + 1.0)) ** 2, 0.0, 1.0)
        factor = (1.0 / width_scale - 1.0) * wy[:, None] * wx[None, :]
        map_x += (dx[None, :] * factor).astype(np.float32)
    out = patch.copy()
    out[y0:y1, x0:x1] = cv2.remap(patch, map_x, map_y, cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REPLICATE)
    return out, new_lm


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
        self._sharp_amount = 0.0
        self._sharp_age = _SHARP_EVERY  # frames since the sharpening was last solved
        self._calibrated = False
        # The blend weights of the last render and where they start in the frame.
        self.last_blend: tuple[int, int, np.ndarray] | None = None
        # Where the last render's pasted lips (landmarks 48-67) landed, frame pixels.
        self.last_lips: np.ndarray | None = None

    @property
    def sharpening(self) -> float:
        """The unsharp amount pasted lips get now (negative: softened)."""
        return self._sharp_amount

    def _interior_colour(self) -> np.ndarray:
        k = int(np.argmax(self.bank.opening))
        if self.bank.opening[k] < 0.08:
            return np.array([60.0, 30.0, 30.0])
        poly = self.bank.landmarks[k][60:68].astype(np.int32)
        m = np.zeros(self.bank.patches.shape[1:3], np.uint8)
        cv2.fillConvexPoly(m, poly, 1)
        pix = self.bank.patches[k][m.astype(bool)]
        return pix.mean(axis=0).astype(np.float64) if len(pix) else np.array([60.0, 30, 30])

    def _lip_mask(self, to_roi: np.ndarray, shapes: tuple[np.ndarray, ...],
                  roi: tuple[int, int]) -> np.ndarray:
        """1 inside the outer lips of each of ``shapes`` (canonical landmarks) as they
        land in the region, grown by a tenth of the eye distance (lip edges are where the
        resampling shows)."""
        m = np.zeros((roi[1], roi[0]), np.float32)
        for lm in shapes:
            pts = lm[_OUTER_LIP] @ to_roi[:, :2].T + to_roi[:, 2]
            cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1.0)
        r = max(1, int(round(0.1 * self.iod * float(np.linalg.norm(to_roi[:, 0])))))
        return np.asarray(cv2.dilate(m, disc(r)), np.float32)

    def _calibrate(self, own: int, to_roi: np.ndarray, t_canon: np.ndarray,
                   region: np.ndarray) -> None:
        """The sharpening that the whole way from a frame to a bank entry and back calls
        for (the crop's JPEG and scale, the cubic warp into the canonical frame, the
        bilinear one back), solved where it can be measured exactly: the entry taken from
        this very frame, pasted back where it came from, against the frame's own lips
        (the same lips, the same shape). Any entry pasted here went the same way. Held
        (smoothed) until the next frame the bank holds at least ``_SHARP_EVERY`` frames
        later."""
        warped = cv2.warpAffine(self.bank.patches[own], to_roi, region.shape[1::-1],
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        lips = self._lip_mask(to_roi, (t_canon,), region.shape[1::-1])
        a = sharpen_amount(warped, region, lips, target_ratio=_SHARP_TARGET)
        self._sharp_amount = (a if not self._calibrated
                              else _SHARP_KEEP * self._sharp_amount + (1 - _SHARP_KEEP) * a)
        self._calibrated = True

    def _resampling_loss(self, patch: np.ndarray, warped: np.ndarray, m_patch: np.ndarray,
                         to_roi: np.ndarray, e_lm: np.ndarray) -> float:
        """The unsharp amount that gives the entry's lips, pasted by the bilinear warp,
        the sharpness the same lips have through a Lanczos warp (the entry as it was,
        on the frame's pixel grid). Measured on the entry's own lips, in and out: the
        same shape, the same content, whatever the frame's own mouth shows."""
        lips = self._lip_mask(to_roi, (e_lm,), warped.shape[1::-1])
        ys, xs = np.nonzero(lips > 0.5)
        if ys.size < 16:
            return 0.0
        h, w = warped.shape[:2]
        x0, y0 = max(int(xs.min()) - 2, 0), max(int(ys.min()) - 2, 0)
        x1, y1 = min(int(xs.max()) + 3, w), min(int(ys.max()) + 3, h)
        sub = m_patch.copy()
        sub[:, 2] -= (x0, y0)
        ref = cv2.warpAffine(patch, sub, (x1 - x0, y1 - y0), flags=cv2.INTER_LANCZOS4,
                             borderMode=cv2.BORDER_REPLICATE)
        return sharpen_amount(warped[y0:y1, x0:x1], ref, lips[y0:y1, x0:x1],
                              target_ratio=_SHARP_TARGET)

    def render(self, frame: np.ndarray, target_lm: np.ndarray, entry: int, alpha: float,
               want_open: float, want_width: float | None = None,
               to_canonical: np.ndarray | None = None, own: int | None = None,
               ) -> tuple[int, int, int, int] | None:
        """Blend ``entry`` into ``frame`` (in place) over the face with landmarks
        ``target_lm``; returns the changed region (x0, y0, x1, y1) or None. ``own``: the
        bank entry taken from this very frame, if there is one (it calibrates the
        sharpening: see :meth:`_calibrate`)."""
        self.last_lips = None
        if alpha <= 0.0:
            return None
        b = self.bank
        canon = b.canonical
        to_c = canon.to_canonical(target_lm) if to_canonical is None else to_canonical
        from_c = np.asarray(cv2.invertAffineTransform(to_c), np.float64)
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
        # Closing and rounding are made whenever the entry misses them: a bilabial must
        # close whatever the bank holds, and rounded lips are often rarer in a source
        # than the shapes around them.
        close_px = -extra if extra < -_CLOSE_TOLERANCE * self.iod else 0.0
        e_width = float(b.width[entry])
        scale = 1.0
        if want_width is not None and e_width > 0:
            ratio = want_width / e_width
            if abs(ratio - 1.0) > _WIDTH_TOLERANCE:
                scale = float(np.clip(ratio, 0.8, 1.12))
        if close_px > 0 or scale != 1.0:
            patch, e_lm = close_and_narrow(patch, e_lm, close_px, scale)
        # Register the entry on the target's own nose base and upper lip (they barely move
        # in speech): the alignment on eyes and nose cannot follow a nod (the mouth moves
        # against the nose in the picture), and a patch a few pixels low shows the
        # source's upper lip above its own, a doubled lip.
        shift = (t_canon[_UPPER_REF] - e_lm[_UPPER_REF]).mean(axis=0)
        limit = 0.12 * self.iod
        shift = shift * min(1.0, limit / max(float(np.linalg.norm(shift)), 1e-6))
        e_lm = e_lm + shift.astype(np.float32)  # where the entry lands (for the mask)
        drop = float(t_canon[8, 1] - e_lm[8, 1])
        if drop > _CHIN_TOLERANCE * self.iod:
            patch, moved = keep_chin(patch, e_lm - shift.astype(np.float32), drop)
            e_lm = moved + shift.astype(np.float32)
        self.last_lips = e_lm[48:68] @ from_c[:, :2].T + from_c[:, 2]
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
        # The patch moves by the registration shift (folded into its one warp: no extra
        # resampling); the mask is already drawn where the patch lands.
        m_patch = m.copy()
        m_patch[:, 2] += from_c[:, :2] @ shift
        # Bilinear: a cubic warp per frame costs five times as much, and the texture a
        # bilinear pass takes is given back below (sharpness matched to the source).
        warped = cv2.warpAffine(patch, m_patch, roi, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        # What the bilinear pass takes, an unsharp mask gives back (below, after the
        # colour). The amount depends on the face's texture and the warp's scale, which
        # change slowly: it is solved every few frames, not every frame.
        # A frame the bank holds calibrates whenever the last solve is a few frames old,
        # and the first one always: gated on a fixed phase of the frame count instead,
        # the frames the bank holds could fall between the solves and never calibrate.
        due = self._sharp_age >= _SHARP_EVERY
        if own is not None and (due or not self._calibrated):
            self._calibrate(own, m, t_canon, frame[y0:y1, x0:x1])
            self._sharp_age = 0
        elif due and not self._calibrated:
            self._sharp_amount = self._resampling_loss(patch, warped, m_patch, m, e_lm)
            self._sharp_age = 0
        self._sharp_age += 1
        m_mask = m.copy()
        m_mask[:, :2] /= MASK_SCALE  # half-resolution mask pixels -> canonical pixels
        wm = np.asarray(cv2.warpAffine(mask, m_mask, roi, flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0),
                        np.float32)
        if alpha < 1.0:
            wm *= np.float32(alpha)
        region = frame[y0:y1, x0:x1]
        # Every step below is one OpenCV call on 8-bit pixels (SIMD, no float copies of
        # the region): at 1080p the float version cost more than the encoder.
        ring = cv2.inRange(wm, 0.05, 0.7)
        if cv2.countNonZero(ring) > 20:
            mr, mw = cv2.mean(region, ring)[:3], cv2.mean(warped, ring)[:3]
            g = (np.array(mr) + 1.0) / (np.array(mw) + 1.0)
            g = self.colour.update(np.clip(g, 0.8, 1.25))
            gains = (float(g[0]), float(g[1]), float(g[2]), 0.0)
            warped = cv2.multiply(warped, gains)  # type: ignore[call-overload]
        a = self._sharp_amount
        if a != 0.0:
            warped = cv2.addWeighted(warped, 1.0 + a, cv2.GaussianBlur(warped, (0, 0), 1.0),
                                     -a, 0.0)
        self.last_blend = (x0, y0, wm)
        frame[y0:y1, x0:x1] = cv2.blendLinear(warped, region, wm, 1.0 - wm)
        return x0, y0, x1, y1

"""The exemplar bank: a person's own lower-face appearances, aligned to one canonical frame.

Every source frame maps to the canonical frame by an affine transform fitted on points
that mouth motion does not move (eye corners, nose, upper cheeks). In that frame all
entries line up, so one entry can be warped into any other frame of the same person.
Entries are chosen to cover the person's range of mouth shapes, and their number is
capped so that memory does not grow with video length.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipdub.faces.crops import choose_frames
from lipdub.faces.geometry import interocular, mouth_opening, mouth_width

# Points that stay put when the jaw opens: upper jaw line, nose bridge and base, eye corners.
STABLE = np.array([0, 1, 2, 14, 15, 16, 27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45])
LOWER_FACE = np.r_[2:15, 31:36]  # jaw from cheek to cheek and the nose base
# The canonical face: inter-ocular distance in pixels is capped here (entries at 1080p
# would otherwise take ~1 MB each); below the cap the face's own resolution is kept.
MAX_CANONICAL_IOD = 110.0


def similarity_to_canonical(landmarks: np.ndarray, template: np.ndarray,
                            stable: np.ndarray = STABLE) -> np.ndarray:
    """2x3 similarity (rotation, uniform scale, shift) from a frame's pixels to canonical
    pixels, fitted robustly on ``stable`` points. Unlike a full affine it cannot shear, so it
    cannot flip to a half-the-points solution when the head turns."""
    src = np.asarray(landmarks, np.float32)[stable]
    dst = np.asarray(template, np.float32)[stable]
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None or not np.all(np.isfinite(m)):
        m = umeyama(src.astype(np.float64), dst.astype(np.float64))
    return np.asarray(m, np.float64)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity src -> dst: (2, 3) for (k, 2) points, (N, 2, 3) for N sets
    of them (one vectorised pass: the render guard fits a whole track at once)."""
    one = np.ndim(src) == 2
    src3 = np.asarray(src, np.float64).reshape(-1, *np.shape(src)[-2:])
    dst3 = np.asarray(dst, np.float64).reshape(src3.shape)
    mu_s, mu_d = src3.mean(1, keepdims=True), dst3.mean(1, keepdims=True)
    s, d = src3 - mu_s, dst3 - mu_d
    u, sig, vt = np.linalg.svd(np.einsum("nki,nkj->nij", d, s))
    flip = np.sign(np.linalg.det(u @ vt))  # no reflection
    r = u @ (vt * np.stack([np.ones_like(flip), flip], axis=1)[:, :, None])
    scale = sig.sum(1) / np.maximum((s**2).sum((1, 2)), 1e-12)
    a = scale[:, None, None] * r
    t = mu_d[:, 0] - np.einsum("nij,nj->ni", a, mu_s[:, 0])
    m = np.concatenate([a, t[:, :, None]], axis=2)
    return m[0] if one else m



@dataclass
class Canonical:
    """The canonical frame of one person: a mean stable shape and a patch size."""

    template: np.ndarray  # (68, 2) mean landmarks in canonical pixels
    size: tuple[int, int]  # patch (width, height)

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> Canonical:
        lm = np.asarray(landmarks, np.float64)
        iod = float(np.median(interocular(lm)))
        scale = min(iod, MAX_CANONICAL_IOD) / iod
        # Normalise each frame by a similarity on the stable points, then average.
        ref = lm[len(lm) // 2]
        aligned = []
        for x in lm[:: max(1, len(lm) // 60)]:
            m, _ = cv2.estimateAffinePartial2D(x[STABLE], ref[STABLE])
            if m is not None:
                aligned.append(x @ m[:, :2].T + m[:, 2])
        mean = np.mean(aligned, axis=0) * scale
        x0, y0 = mean.min(axis=0)
        x1, y1 = mean.max(axis=0)
        w, h = x1 - x0, y1 - y0
        # The patch holds the lower face only, which is all the compositor blends (its mask
        # lies between the jaw and the nose base): from just above the nose base and the
        # upper jaw, down to a third of the face below the chin (the open jaw and the neck),
        # a little beyond the jaw at the sides. The eyes stay in the template (the
        # alignment uses them) but not in the pixels: a third of the memory of a bank.
        top = min(float(mean[2:15, 1].min()), float(mean[29:36, 1].min())) - 0.2 * h
        origin = np.array([x0 - 0.08 * w, top])
        template = mean - origin
        size = (int(np.ceil(w * 1.16)), int(np.ceil(y1 + 0.35 * h - top)))
        return cls(template=template.astype(np.float32), size=size)

    def to_canonical(self, landmarks: np.ndarray) -> np.ndarray:
        """2x3 similarity from a frame's pixels to canonical pixels.

        A similarity, not a full affine: with the head turned, a robust affine fit can
        flip to a sheared solution that fits half the points, and an entry warped back
        through it smears the cheek across the mouth (the vasp glitch, frames 62-64).
        """
        return similarity_to_canonical(landmarks, self.template)


@dataclass
class Bank:
    """Aligned appearances of one person's lower face, with their measured shapes."""

    canonical: Canonical
    patches: np.ndarray  # (K, H, W, 3) uint8 canonical patches
    landmarks: np.ndarray  # (K, 68, 2) canonical landmarks
    opening: np.ndarray  # (K,) geometry units (inner-lip gap / IOD)
    width: np.ndarray  # (K,)
    pose: np.ndarray  # (K, 3)
    frames: np.ndarray  # (K,) track row of each entry
    # (K,) its source frame number: the same as the row only on a track without gaps (a
    # face track joined across a gap or a cut has neighbouring rows that are not
    # neighbouring frames).
    source_frames: np.ndarray
    thumbs: np.ndarray  # (K, D) small grey mouth images, for transition costs

    def __len__(self) -> int:
        return int(self.patches.shape[0])


class BankBuilder:
    """Collects bank entries while the source frames stream past."""

    def __init__(self, landmarks: np.ndarray, frames: np.ndarray, pose: np.ndarray,
                 cap: int = 240, only: np.ndarray | None = None) -> None:
        """``only``: the frames to take (those identify kept crops of); by default they
        are chosen among all the track's frames."""
        self.canonical = Canonical.from_landmarks(landmarks)
        if only is None:
            rows = choose_frames(landmarks, frames, cap)
        else:
            rows = np.flatnonzero(np.isin(frames, only))
        self._wanted = {int(frames[r]): int(r) for r in rows}
        # Each entry's place in the bank, in time order, fixed in advance: the patches are
        # warped straight into one array (a list of them stacked at the end held the bank
        # twice), whatever order the frames come in.
        self._slot = {int(r): k for k, r in enumerate(sorted(self._wanted.values()))}
        w, h = self.canonical.size
        self._patches = np.empty((len(self._slot), h, w, 3), np.uint8)
        self._lm = landmarks
        self._frames = np.asarray(frames)
        self._pose = pose
        self._entries: dict[int, np.ndarray] = {}  # row -> canonical landmarks

    def wants(self, frame_index: int) -> bool:
        return frame_index in self._wanted

    def add(self, frame_index: int, rgb: np.ndarray,
            to_frame: np.ndarray | None = None) -> None:
        """Take the entry of ``frame_index`` from ``rgb``: the whole frame, or an image whose
        pixels map to frame pixels by the 2x3 affine ``to_frame`` (a window, a crop)."""
        row = self._wanted[frame_index]
        m = self.canonical.to_canonical(self._lm[row])
        lm = self._lm[row] @ m[:, :2].T + m[:, 2]
        m_win = m
        if to_frame is not None:
            m_win = np.hstack([m[:, :2] @ to_frame[:, :2], (m[:, :2] @ to_frame[:, 2]
                                                          + m[:, 2])[:, None]])
        # Cubic: once per entry, and what detail is lost here no sharpening gives back.
        if row in self._entries:
            return  # a frame given twice (a damaged crops file): its first entry stands
        self._patches[self._slot[row]] = cv2.warpAffine(
            rgb, m_win, self.canonical.size, flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REPLICATE)
        self._entries[row] = lm.astype(np.float32)  # one dict store: thread-safe

    def build(self) -> Bank:
        if not self._entries:
            raise ValueError("no bank entries were collected")
        rows = np.array(sorted(self._entries))  # in time order, however they were added
        lms = np.stack([self._entries[int(r)] for r in rows])
        slots = np.array([self._slot[r] for r in rows])
        # Every wanted frame came (the usual case): the array is the bank; else those that
        # did (a slot never written holds garbage, so this compares slots, not counts).
        patches = (self._patches if np.array_equal(slots, np.arange(len(self._patches)))
                   else self._patches[slots])
        thumbs = np.stack([mouth_thumb(p, lm) for p, lm in zip(patches, lms, strict=True)])
        return Bank(
            canonical=self.canonical,
            patches=patches,
            landmarks=lms,
            opening=mouth_opening(lms).astype(np.float32),
            width=mouth_width(lms).astype(np.float32),
            pose=self._pose[rows].astype(np.float32),
            frames=rows,
            source_frames=self._frames[rows],
            thumbs=thumbs,
        )


def mouth_thumb(patch: np.ndarray, lm: np.ndarray, size: tuple[int, int] = (16, 12)) -> np.ndarray:
    """A tiny grey image of the mouth area, normalised, to compare appearances cheaply."""
    x0, y0 = lm[48:68].min(axis=0) - 6
    x1, y1 = lm[48:68].max(axis=0) + 6
    h, w = patch.shape[:2]
    x0, y0 = int(max(x0, 0)), int(max(y0, 0))
    x1, y1 = int(min(x1, w)), int(min(y1, h))
    crop = cv2.cvtColor(patch[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    t = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).ravel()
    return ((t - t.mean()) / (t.std() + 1e-3)).astype(np.float32)

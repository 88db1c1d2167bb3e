"""Which bank entries are safe to show: alignment, landmark shape, blur, occlusion, pose.

:func:`score_entries` scores every entry on each criterion (1.0 = the rejection
threshold), :func:`vet_entries` keeps the safe ones, never dropping more than a set share
of the bank and always keeping its range of openings.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

from lipdub.faces.geometry import interocular, mouth_opening, mouth_width
from lipdub.render.bank import LOWER_FACE, STABLE, Bank

_EPS = 1e-6


@dataclass
class EntryScores:
    """Per-entry badness on each criterion, scaled so that 1.0 is the rejection threshold."""

    alignment: np.ndarray  # stable points away from the template (a bad frame transform)
    shape: np.ndarray  # implausible lip/jaw geometry (a landmark failure)
    blur: np.ndarray  # mouth texture far below the bank's median (motion blur)
    occlusion: np.ndarray  # lower face unlike the bank's robust median (hand, microphone)
    pose: np.ndarray  # head turned far from the bank's typical pose

    def total(self) -> np.ndarray:
        return np.max(np.stack([getattr(self, f.name) for f in fields(self)]), axis=0)

    def reason(self, k: int) -> str:
        """The worst criterion of entry ``k`` and its score, for logs."""
        name = max((f.name for f in fields(self)), key=lambda n: float(getattr(self, n)[k]))
        return f"{name}={float(getattr(self, name)[k]):.2f}"


def _robust_excess(x: np.ndarray, k: float, floor: float) -> np.ndarray:
    """How far above median + k * MAD-sigma (at least ``floor`` above the median) each
    value lies, as a multiple of that threshold distance (1.0 = on the threshold)."""
    med = float(np.median(x))
    sigma = 1.4826 * float(np.median(np.abs(x - med)))
    return np.maximum(x - med, 0.0) / max(k * sigma, floor, _EPS)


def lapvar(grey: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of a grey image (optionally inside a boolean mask)."""
    lap = cv2.Laplacian(np.asarray(grey, np.float32), cv2.CV_32F)
    vals = lap[mask] if mask is not None else lap
    return float(vals.var()) if vals.size else 0.0


def _mouth_box(lm: np.ndarray, iod: float, shape: tuple[int, ...],
               margin: float = 0.25) -> tuple[slice, slice]:
    x0, y0 = lm[48:60].min(0) - margin * iod
    x1, y1 = lm[48:60].max(0) + margin * iod
    h, w = shape[:2]
    return (slice(int(max(y0, 0)), int(min(y1, h))), slice(int(max(x0, 0)), int(min(x1, w))))


OCCLUSION_Z = 3.0
OCC_FLOOR = 0.15
OCC_ABS = 0.35
_K3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))




def _appearance(small_rgb: np.ndarray) -> np.ndarray:
    """Per-pixel Lab colour and local contrast (gradient magnitude of L, x2) of a small
    patch, lightly blurred: a flat block and a textured hand both stand out in one of them."""
    lab = cv2.GaussianBlur(cv2.cvtColor(small_rgb, cv2.COLOR_RGB2LAB), (0, 0), 1.0)
    lab = lab.astype(np.float32)
    gx = cv2.Sobel(lab[..., 0], cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab[..., 0], cv2.CV_32F, 0, 1, ksize=3)
    grad = cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 1.0)
    return np.concatenate([lab, 0.5 * grad[..., None]], axis=2)


def score_entries(patches: np.ndarray, landmarks: np.ndarray, template: np.ndarray,
                  pose: np.ndarray, *, scale: float = 0.25) -> EntryScores:
    """Score every bank entry (canonical ``patches`` (K, H, W, 3) uint8 RGB, canonical
    ``landmarks`` (K, 68, 2), the canonical ``template`` (68, 2), ``pose`` (K, 3))."""
    patches = np.asarray(patches)
    lms = np.asarray(landmarks, np.float64)
    tpl = np.asarray(template, np.float64)
    k_len = len(patches)
    iod = float(interocular(tpl))

    # Alignment: where the entry's stable points landed in the canonical frame.
    stable_res = np.linalg.norm(lms[:, STABLE] - tpl[STABLE][None], axis=2).max(axis=1)
    alignment = np.maximum(_robust_excess(stable_res, 4.0, 0.15 * iod),
                           stable_res / (0.6 * iod))

    # Shape: lips in order, inner lips inside the outer ones, mouth where the bank has it.
    op = mouth_opening(lms)
    wd = mouth_width(lms)
    centre = lms[:, 48:60].mean(1)
    c_med = np.median(centre, axis=0)
    off = np.linalg.norm(centre - c_med, axis=1) / iod
    inner_w = np.linalg.norm(lms[:, 64] - lms[:, 60], axis=1)
    outer_w = np.linalg.norm(lms[:, 54] - lms[:, 48], axis=1)
    order_bad = ((lms[:, 51, 1] < lms[:, 33, 1]) | (lms[:, 57, 1] > lms[:, 8, 1])
                 | (op < -0.03) | (inner_w > 1.15 * outer_w))
    shape = np.maximum.reduce([
        _robust_excess(np.abs(wd - np.median(wd)), 5.0, 0.12),
        _robust_excess(off, 5.0, 0.15),
        np.where(order_bad, 2.0, 0.0),
    ])

    # Work on small copies from here on: the statistics below are smooth by nature.
    small = np.stack([cv2.resize(p, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                      for p in patches])
    s_lm = lms * scale
    s_iod = iod * scale

    # Blur: Laplacian variance around the mouth, full resolution (fine detail is the point).
    lv = np.empty(k_len)
    for k in range(k_len):
        ys, xs = _mouth_box(lms[k], iod, patches.shape[1:])
        lv[k] = lapvar(cv2.cvtColor(patches[k][ys, xs], cv2.COLOR_RGB2GRAY))
    blur = np.clip(np.median(lv) / np.maximum(lv, _EPS), 0, 100) / 3.0  # 1.0 at a third

    # Occlusion: pixels of the lower face far from the bank's per-pixel robust median, in
    # Lab, leaving out each entry's own lips and open mouth (they change shape by design:
    # an occluder covers the chin and cheeks around them as well). A light blur forgives
    # the small misregistration of edges between entries.
    feats = np.stack([_appearance(p) for p in small])
    # The per-pixel reference from at most 64 entries spread through the bank: a robust
    # median needs no more, and the full one was a tenth of a short sync's CPU.
    ref = feats[np.linspace(0, k_len - 1, min(k_len, 64)).round().astype(int)]
    med = np.median(ref, axis=0)
    mad = 1.4826 * np.median(np.abs(ref - med[None]), axis=0)
    spread = np.maximum(mad, 6.0)
    hh, ww = small.shape[1:3]
    occl = np.empty(k_len)
    for k in range(k_len):
        # The entry's own lower face: a raised chin shows neck below it, not an occluder.
        reg = np.zeros((hh, ww), np.uint8)
        cv2.fillConvexPoly(reg, cv2.convexHull(s_lm[k, LOWER_FACE].astype(np.int32)), 1)
        lips = cv2.convexHull(s_lm[k, 48:60].astype(np.int32))
        cv2.fillConvexPoly(reg, lips, 0)
        r = max(1, int(0.08 * s_iod))
        cv2.polylines(reg, [lips], True, 0, thickness=2 * r)
        sel = reg.astype(bool)
        # Entry by entry: over the whole bank these temporaries were 60 MB.
        z = (np.abs(feats[k] - med) / spread).max(axis=2)
        # Opening keeps blobs (an occluder) and drops thin edge misregistrations.
        out = cv2.morphologyEx((z > OCCLUSION_Z).astype(np.uint8), cv2.MORPH_OPEN, _K3)
        occl[k] = float(out[sel].mean()) if sel.any() else 0.0
    occlusion = np.maximum(_robust_excess(occl, 4.0, OCC_FLOOR), occl / OCC_ABS)

    # Pose: far from what the bank mostly shows (a profile among frontal frames).
    p = np.asarray(pose, np.float64)
    dyaw = np.abs(p[:, 0] - np.median(p[:, 0]))
    dpitch = np.abs(p[:, 1] - np.median(p[:, 1]))
    pose_bad = np.maximum(dyaw / 35.0, dpitch / 25.0)

    return EntryScores(alignment=alignment, shape=shape, blur=blur, occlusion=occlusion,
                       pose=pose_bad)


def vet_entries(patches: np.ndarray, landmarks: np.ndarray, template: np.ndarray,
                pose: np.ndarray, *, keep_at_least: float = 0.6, bins: int = 5,
                hard: float = 2.0, scores: EntryScores | None = None) -> np.ndarray:
    """Boolean keep-mask over bank entries: False for entries that fail a check.

    The bank keeps its range: each of ``bins`` quantile bins of mouth opening keeps its
    least bad entry unless that one scores above ``hard``; and never more than
    ``1 - keep_at_least`` of the bank is rejected (the least bad are kept). Pass ``scores``
    to reuse a :func:`score_entries` result.
    """
    s = scores if scores is not None else score_entries(patches, landmarks, template, pose)
    total = s.total()
    keep = total <= 1.0
    # The range: every fifth of the opening range keeps its least bad entry, unless even
    # that one fails clearly.
    op = mouth_opening(np.asarray(landmarks, np.float64))
    edges = np.quantile(op, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, op, side="right") - 1, 0, bins - 1)
    for b in range(bins):
        members = np.nonzero(which == b)[0]
        if len(members) and not keep[members].any():
            best = members[np.argmin(total[members])]
            keep[best] = total[best] <= hard
    need = int(np.ceil(keep_at_least * len(total)))
    if keep.sum() < need:
        keep[np.argsort(total, kind="stable")[:need]] = True
    return keep


def subset_bank(bank: Bank, keep: np.ndarray) -> Bank:
    """The bank without the entries where ``keep`` is False (same canonical frame)."""
    idx = np.nonzero(np.asarray(keep, bool))[0]
    return replace(bank, patches=bank.patches[idx], landmarks=bank.landmarks[idx],
                   opening=bank.opening[idx], width=bank.width[idx], pose=bank.pose[idx],
                   frames=bank.frames[idx], source_frames=bank.source_frames[idx],
                   thumbs=bank.thumbs[idx])

"""Guards against garbage frames, and the sharpness that resampling takes away.

Small tools, all numpy/OpenCV on the canonical patch or on the small region of
interest around one face, so they cost little at any video resolution:

* :func:`plausible_target` / :func:`transform_distortion`: is a target frame's alignment
  to the canonical frame a plausible one? ``Canonical.to_canonical`` used to fit a full affine
  with LMEDS on the "stable" points; when the head is turned, the jaw contour (points 0-2 and
  14-16) moves against the nose and LMEDS can flip to a solution that fits one half of the
  points and throws the other half away. That solution is strongly sheared (the vasp case:
  singular values 0.97 / 0.55, axes 68 degrees apart, jaw points 50 px off), and any entry
  aligned with the normal solution, warped through it, smears the cheek and jaw across the
  mouth. :func:`similarity_to_canonical` is what it fits now (no shear possible); the check stays
  for transforms passed in from elsewhere. :func:`landmark_jumps` tells a tracker failure
  from a movement (the lower face moving against the head), for a whole track at once.
* :func:`vet_entries`: which bank entries are safe to show (alignment, landmark shape,
  blur, occlusion, pose); never drops more than a set share of the bank.
* :func:`check_patch`: a rendered region against the source frame's same region and the
  previous output (colour, structure, sudden jumps beyond what the source does).
* :func:`match_sharpness`: an unsharp mask whose amount brings the warped patch's Laplacian
  variance back to the source's, measured on the same region.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

from lipdub.faces.geometry import interocular, mouth_opening, mouth_width
from lipdub.render.bank import STABLE, Bank, similarity_to_canonical, umeyama

__all__ = [
    "EntryScores",
    "check_patch",
    "lapvar",
    "match_sharpness",
    "sharpen_amount",
    "unsharp",
    "MAX_LANDMARK_JUMP",
    "landmark_jumps",
    "plausible_target",
    "plausible_transform",
    "repair_lip_spikes",
    "render_targets",
    "RenderTargets",
    "plausible_targets",
    "transform_distortions",
    "roi_box",
    "SmallLab",
    "score_entries",
    "similarity_to_canonical",
    "subset_bank",
    "transform_distortion",
    "vet_entries",
]

# A tracked face whose lower face moves more than this between frames (inter-ocular
# distances, the head's own motion taken out) is a tracker failure, not a movement.
MAX_LANDMARK_JUMP = 0.25
_LOWER = np.r_[2:15, 31:36]  # jaw from cheek to cheek and the nose base: the lower face
_EPS = 1e-6


# --------------------------------------------------------------------------- alignment


def transform_distortion(m: np.ndarray) -> tuple[float, float]:
    """(anisotropy, shear in degrees) of a 2x3 affine's linear part.

    Anisotropy is the ratio of its singular values (1 = a similarity); shear is how far the
    images of the x and y axes are from perpendicular. A face alignment may foreshorten a
    turned head a little (about 1.1-1.25); it never needs a strong shear.
    """
    aniso, shear = transform_distortions(np.asarray(m, np.float64)[None])
    return float(aniso[0]), float(shear[0])


def transform_distortions(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`transform_distortion` of (N, 2, 3) affines at once (finite ones)."""
    a = np.asarray(m, np.float64)[:, :, :2]
    s = np.linalg.svd(a, compute_uv=False)
    aniso = s[:, 0] / np.maximum(s[:, 1], _EPS)
    ax, ay = a[:, :, 0], a[:, :, 1]
    norms = np.linalg.norm(ax, axis=1) * np.linalg.norm(ay, axis=1)
    cos = (ax * ay).sum(1) / np.maximum(norms, _EPS)
    shear = np.abs(90.0 - np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return aniso, shear


def plausible_transform(m: np.ndarray | None, *, max_aniso: float = 1.35,
                        max_shear_deg: float = 12.0) -> bool:
    """True when ``m`` (frame -> canonical) is close enough to a similarity."""
    if m is None or not np.all(np.isfinite(m)):
        return False
    aniso, shear = transform_distortion(m)
    return aniso <= max_aniso and shear <= max_shear_deg


def plausible_target(landmarks: np.ndarray, prev: np.ndarray | None, template: np.ndarray,
                     *, transform: np.ndarray | None = None, max_aniso: float = 1.35,
                     max_shear_deg: float = 12.0, max_stable_residual: float = 0.6,
                     max_jump: float = MAX_LANDMARK_JUMP) -> bool:
    """Can a bank entry be warped onto the face with ``landmarks`` (68, 2, frame pixels)?

    * the frame -> canonical ``transform`` (default: the similarity ``Canonical.to_canonical``
      computes) is close to a similarity and fits every stable point within
      ``max_stable_residual`` inter-ocular distances;
    * the landmarks did not jump against ``prev`` (the previous frame's landmarks) by more
      than ``max_jump`` inter-ocular distances once the head's own motion (a similarity on
      the stable points) is taken out: a tracker failure, not a movement.
    """
    lm = np.asarray(landmarks, np.float64)
    if not np.all(np.isfinite(lm)):
        return False
    m = similarity_to_canonical(lm, template) if transform is None else transform
    if not plausible_targets(lm[None], template, np.asarray(m, np.float64)[None],
                             max_aniso=max_aniso, max_shear_deg=max_shear_deg,
                             max_stable_residual=max_stable_residual)[0]:
        return False
    return not (prev is not None and float(landmark_jumps(prev, lm)[0]) > max_jump)


def plausible_targets(landmarks: np.ndarray, template: np.ndarray, transforms: np.ndarray,
                      *, max_aniso: float = 1.35, max_shear_deg: float = 12.0,
                      max_stable_residual: float = 0.6) -> np.ndarray:
    """:func:`plausible_target` without the jump, for (N, 68, 2) landmarks and their
    (N, 2, 3) transforms at once: a render checks a whole track before its first frame
    instead of paying a millisecond of small NumPy calls per frame."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    m = np.asarray(transforms, np.float64).reshape(-1, 2, 3)
    tpl = np.asarray(template, np.float64)
    finite = np.asarray(np.isfinite(lm).all((1, 2)) & np.isfinite(m).all((1, 2)), bool)
    m = np.where(finite[:, None, None], m, np.eye(2, 3))  # SVD refuses NaN; judged below
    aniso, shear = transform_distortions(m)
    safe = np.where(finite[:, None, None], lm, 0.0)
    fitted = np.einsum("nkj,nij->nki", safe[:, STABLE], m[:, :, :2]) + m[:, None, :, 2]
    res = np.linalg.norm(fitted - tpl[STABLE], axis=2).max(1)
    return np.asarray(finite & (aniso <= max_aniso) & (shear <= max_shear_deg)
                      & (res <= max_stable_residual * float(interocular(tpl))))


def landmark_jumps(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """For landmark pairs (68, 2) or (N, 68, 2): how far the lower face moved from ``prev``
    to ``cur`` once the head's own motion (a similarity on the stable points, Umeyama) is
    taken out, as the median over the jaw and nose base, in ``cur``'s inter-ocular
    distances. All pairs at once: a render loop calls this ahead for a whole track."""
    p = np.asarray(prev, np.float64).reshape(-1, 68, 2)
    c = np.asarray(cur, np.float64).reshape(-1, 68, 2)
    m = umeyama(p[:, STABLE], c[:, STABLE])  # (N, 2, 3)
    moved = np.einsum("nkj,nij->nki", p[:, _LOWER], m[:, :, :2]) + m[:, None, :, 2]
    jump = np.median(np.linalg.norm(moved - c[:, _LOWER], axis=2), axis=1)
    return np.asarray(jump / interocular(c))


# --------------------------------------------------------------------------- bank entries


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


@functools.lru_cache(maxsize=64)
def disc(r: int) -> np.ndarray:
    """Elliptic structuring element of radius ``r`` (one per face size: made once)."""
    d = np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    d.flags.writeable = False  # shared by every caller
    return d


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
        cv2.fillConvexPoly(reg, cv2.convexHull(s_lm[k, _LOWER].astype(np.int32)), 1)
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
                   frames=bank.frames[idx], thumbs=bank.thumbs[idx])


# --------------------------------------------------------------------------- rendered patch


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
                limits: PatchLimits | None = None) -> tuple[bool, str]:
    """Is a rendered region plausible? Returns (ok, reason); reason is "" when ok.

    ``rendered_roi`` and ``source_roi`` are the same box of the output and of the source
    frame (H, W, 3 uint8 RGB); ``mask`` (H, W) the blend weight there (0..1). The previous
    frame's ROIs may be cut with that frame's own :func:`roi_box` (any size: everything is
    compared at a small fixed size, so a box that follows the face is what fits best).
    ``lips`` (>= 20 points, ROI pixels: the target's landmarks 48-67) marks where a change
    is expected: the structure check only looks away from the mouth and jaw drop.

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


# --------------------------------------------------------------------------- sharpness


def sharpen_amount(warped: np.ndarray, source_roi: np.ndarray, mask: np.ndarray, *,
                   sigma: float = 1.0, max_amount: float = 2.5,
                   target_ratio: float = 1.0) -> float:
    """The unsharp-mask amount ``a`` that brings ``warped``'s Laplacian variance over
    ``mask`` > 0.5 to ``target_ratio`` times the source's there (0 when it is already as
    sharp).

    The Laplacian of ``x + a (x - G x)`` is ``L1 + a (L1 - L2)``, so its variance is a
    quadratic in ``a`` that is solved in closed form: one blur and two Laplacians of the
    ROI, no search. Measured over the whole blended region (mostly skin, whose texture
    does not depend on the mouth shape), it undoes what the resampling took, inside the
    lips as well.
    """
    x = np.asarray(warped, np.float32)
    core = np.asarray(mask) > 0.5
    if core.sum() < 16:
        return 0.0
    g_src = cv2.cvtColor(np.clip(np.asarray(source_roi, np.float32), 0, 255),
                         cv2.COLOR_RGB2GRAY)
    g = cv2.cvtColor(np.clip(x, 0, 255), cv2.COLOR_RGB2GRAY)
    gb = cv2.GaussianBlur(g, (0, 0), sigma)
    l1 = cv2.Laplacian(g, cv2.CV_32F)[core]
    l2 = cv2.Laplacian(gb, cv2.CV_32F)[core]
    target = target_ratio * float(cv2.Laplacian(g_src, cv2.CV_32F)[core].var())
    l1 = l1 - l1.mean()
    dd = l1 - (l2 - l2.mean())
    # Element-wise sums, not BLAS dot products: no thread pool spinning up per frame.
    v1, c, vd = float((l1 * l1).mean()), float((l1 * dd).mean()), float((dd * dd).mean())
    if v1 >= target or vd < _EPS:
        return 0.0
    # vd a^2 + 2 c a + (v1 - target) = 0, the positive root.
    disc = c * c - vd * (v1 - target)
    a = (-c + np.sqrt(max(disc, 0.0))) / vd
    return float(np.clip(a, 0.0, max_amount))


def unsharp(x: np.ndarray, amount: float, sigma: float = 1.0) -> np.ndarray:
    """``x + amount (x - G_sigma x)``, float32."""
    x = np.asarray(x, np.float32)
    if amount <= 0.0:
        return x
    blur = cv2.GaussianBlur(x, (0, 0), sigma)
    return np.asarray(x + amount * (x - blur), np.float32)


def match_sharpness(warped: np.ndarray, source_roi: np.ndarray, mask: np.ndarray, *,
                    sigma: float = 1.0, max_amount: float = 2.5,
                    target_ratio: float = 1.0) -> np.ndarray:
    """Unsharp-mask ``warped`` (float32 or uint8, H x W x 3) so that its Laplacian variance
    over ``mask`` > 0.5 reaches ``target_ratio`` times the source's there (see
    :func:`sharpen_amount`). Returns float32."""
    a = sharpen_amount(warped, source_roi, mask, sigma=sigma, max_amount=max_amount,
                       target_ratio=target_ratio)
    return unsharp(warped, a, sigma)


# --------------------------------------------------------------------------- target track

_NOSE_LIP = (np.array([49, 50, 51, 52, 53]), np.array([31, 32, 33, 34, 35]))


def repair_lip_spikes(landmarks: np.ndarray, frames: np.ndarray, template: np.ndarray, *,
                      window: int = 4, max_dev: float = 0.06,
                      transforms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks with tracker spikes on the upper lip replaced by interpolation between
    the nearest good frames; returns (landmarks, bad-row mask).

    The upper lip hangs a nearly fixed distance under the nose base while a person
    speaks (the lower lip and jaw do the moving). A frame where that distance, in the
    canonical frame, is ``max_dev`` inter-ocular distances off the median of its
    ``window`` neighbours on each side is a tracker failure (seen on face_5: 37 px against
    18-23 px for two frames), and a mouth rendered there lands below the real one,
    showing the source's upper lip above it. ``transforms``: each row's
    :func:`similarity_to_canonical`, when the caller has them.
    """
    lm = np.asarray(landmarks, np.float64)
    n = lm.shape[0]
    bad = np.zeros(n, bool)
    if n < 3:
        return lm, bad
    tpl = np.asarray(template, np.float64)
    iod = float(interocular(tpl))
    lip, nose = _NOSE_LIP
    m = (np.asarray(transforms, np.float64) if transforms is not None
         else np.stack([similarity_to_canonical(x, tpl) for x in lm]))
    c = np.einsum("nkj,nij->nki", lm, m[:, :, :2]) + m[:, None, :, 2]
    gap = c[:, lip, 1].mean(1) - c[:, nose, 1].mean(1)
    for i in range(n):
        lo, hi = max(0, i - window), min(n, i + window + 1)
        ref = np.median(np.r_[gap[lo:i], gap[i + 1:hi]])
        bad[i] = abs(gap[i] - ref) > max_dev * iod
    if not bad.any() or bad.all():
        return lm, bad
    out = lm.copy()
    good = np.flatnonzero(~bad)
    t = np.asarray(frames, np.float64)
    for k in range(68):
        for d in range(2):
            out[bad, k, d] = np.interp(t[bad], t[good], lm[good, k, d])
    return out, bad


@dataclass(frozen=True)
class RenderTargets:
    """A track made ready for rendering, before the first frame: its landmarks with
    tracker spikes repaired, each row's frame -> canonical similarity, and whether a bank
    entry can be warped onto it (:func:`plausible_targets`)."""

    landmarks: np.ndarray  # (N, 68, 2) frame pixels
    repaired: np.ndarray  # (N,) bool: rows :func:`repair_lip_spikes` replaced
    to_canonical: np.ndarray  # (N, 2, 3)
    plausible: np.ndarray  # (N,) bool

    def to_canonical_at(self, row: int, origin: np.ndarray) -> np.ndarray:
        """Row ``row``'s similarity for pixels of a window that starts at ``origin`` in
        the frame: a point p there is p + origin in the frame."""
        m = self.to_canonical[row].copy()
        m[:, 2] += m[:, :2] @ origin
        return m


def render_targets(landmarks: np.ndarray, frames: np.ndarray,
                   template: np.ndarray) -> RenderTargets:
    """:class:`RenderTargets` of a track (one similarity fit a row, the rest vectorised)."""
    lm = np.asarray(landmarks, np.float64)
    fits = (np.stack([similarity_to_canonical(x, template) for x in lm]) if len(lm)
            else np.zeros((0, 2, 3)))
    fixed, bad = repair_lip_spikes(lm, frames, template, transforms=fits)
    repaired = bad & np.any(fixed != lm, axis=(1, 2))  # all rows flagged: none replaced
    for i in np.flatnonzero(repaired):  # the repaired rows fit again
        fits[i] = similarity_to_canonical(fixed[i], template)
    return RenderTargets(fixed, repaired, fits, plausible_targets(fixed, template, fits))

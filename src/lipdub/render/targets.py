"""The target track: is each frame's face where the renderer may paint?

* :func:`plausible_target` / :func:`transform_distortion`: is a target frame's alignment
  to the canonical frame a plausible one? ``Canonical.to_canonical`` used to fit a full
  affine with LMEDS on the "stable" points; when the head is turned, the jaw contour
  (points 0-2 and 14-16) moves against the nose and LMEDS can flip to a solution that fits
  one half of the points and throws the other half away. That solution is strongly
  sheared (the vasp case: singular values 0.97 / 0.55, axes 68 degrees apart, jaw points
  50 px off), and any entry aligned with the normal solution, warped through it, smears
  the cheek and jaw across the mouth. :func:`similarity_to_canonical` is what it fits now
  (no shear possible); the check stays for transforms passed in from elsewhere.
* :func:`landmark_jumps` tells a tracker failure from a movement (the lower face moving
  against the head), for a whole track at once.
* :func:`repair_lip_spikes` and :func:`render_targets`: a track readied once, beside the
  preparation (spikes repaired, each row's alignment and its plausibility), so the render
  loop only looks rows up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipdub.faces.geometry import interocular
from lipdub.render.bank import LOWER_FACE, STABLE, similarity_to_canonical, umeyama

# A tracked face whose lower face moves more than this between frames (inter-ocular
# distances, the head's own motion taken out) is a tracker failure, not a movement.
MAX_LANDMARK_JUMP = 0.25
_EPS = 1e-6


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
    moved = np.einsum("nkj,nij->nki", p[:, LOWER_FACE], m[:, :, :2]) + m[:, None, :, 2]
    jump = np.median(np.linalg.norm(moved - c[:, LOWER_FACE], axis=2), axis=1)
    return np.asarray(jump / interocular(c))


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

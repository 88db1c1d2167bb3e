"""A pasted patch as sharp as the frame it lands in: an unsharp mask whose amount (negative:
a softening blend) brings a warped patch's Laplacian variance to the source's, measured on
the same region (the compositor measures it on one and the same mouth: a frame's own
bank entry pasted back where it came from, against the frame). Resampling takes sharpness
away; a bank entry from a still, crisp frame brings more than a moving one has."""

from __future__ import annotations

import cv2
import numpy as np

_EPS = 1e-6


def sharpen_amount(warped: np.ndarray, source_roi: np.ndarray, mask: np.ndarray, *,
                   sigma: float = 1.0, max_amount: float = 2.5,
                   target_ratio: float = 1.0) -> float:
    """The unsharp-mask amount ``a`` that brings ``warped``'s Laplacian variance over
    ``mask`` > 0.5 to ``target_ratio`` times the source's there: positive to sharpen,
    negative (down to -1, the patch blurred by ``sigma``) to soften.

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
    if vd < _EPS:
        return 0.0
    # vd a^2 + 2 c a + (v1 - target) = 0. A patch softer than the source takes the
    # positive root (sharpen); one sharper than it (an entry from a still, crisp frame
    # pasted into a moving, softer one: crisp lips on a soft face read as a seam) the
    # root nearest zero on the negative side, a blend toward the blurred patch, at most
    # all the way (-1). Where no amount reaches the target, the nearest: the vertex.
    disc = c * c - vd * (v1 - target)
    a = (-c + np.sqrt(disc)) / vd if disc >= 0.0 else -c / vd
    return float(np.clip(a, -1.0, max_amount))


def unsharp(x: np.ndarray, amount: float, sigma: float = 1.0) -> np.ndarray:
    """``x + amount (x - G_sigma x)``, float32."""
    x = np.asarray(x, np.float32)
    if amount == 0.0:
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

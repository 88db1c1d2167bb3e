"""Measurements on dlib 68-point landmarks that several layers share.

``mouth_opening`` is the one figure everything is judged by: the inner-lip gap divided by
the inter-ocular distance (so it does not depend on the face's size in the frame).
"""

from __future__ import annotations

import numpy as np

JAW = slice(0, 17)
NOSE = slice(27, 36)
LEFT_EYE = slice(36, 42)  # the subject's right eye, image left
RIGHT_EYE = slice(42, 48)
OUTER_LIPS = slice(48, 60)
INNER_LIPS = slice(60, 68)
# Inner-lip pairs facing each other (upper, lower): 61-67, 62-66, 63-65.
_INNER_UPPER = [61, 62, 63]
_INNER_LOWER = [67, 66, 65]


def interocular(lm: np.ndarray) -> np.ndarray:
    """Distance between the eye centres, for (68, 2) or (N, 68, 2) landmarks."""
    lm = np.asarray(lm, dtype=np.float64)
    left = lm[..., LEFT_EYE, :].mean(axis=-2)
    right = lm[..., RIGHT_EYE, :].mean(axis=-2)
    return np.maximum(np.linalg.norm(right - left, axis=-1), 1e-6)


def mouth_opening(lm: np.ndarray) -> np.ndarray:
    """Inner-lip gap over inter-ocular distance (0 = closed, ~0.3-0.5 = wide open)."""
    lm = np.asarray(lm, dtype=np.float64)
    gap = np.linalg.norm(lm[..., _INNER_LOWER, :] - lm[..., _INNER_UPPER, :], axis=-1).mean(-1)
    return gap / interocular(lm)


def lip_height(lm: np.ndarray) -> np.ndarray:
    """Outer-lip height (top of the upper lip, 51, to the bottom of the lower, 57) over
    inter-ocular distance. Where the inner-lip points have collapsed (``mouth_opening``
    near 0, as dlib puts them for lips together and for lips just parted alike), the
    smaller this is, the more surely the lips are together (entry selection's closures
    take the thinnest: bench/motion.py's closure rate rose with it)."""
    lm = np.asarray(lm, dtype=np.float64)
    return np.linalg.norm(lm[..., 57, :] - lm[..., 51, :], axis=-1) / interocular(lm)


def mouth_width(lm: np.ndarray) -> np.ndarray:
    """Distance between the mouth corners (48, 54) over inter-ocular distance."""
    lm = np.asarray(lm, dtype=np.float64)
    return np.linalg.norm(lm[..., 54, :] - lm[..., 48, :], axis=-1) / interocular(lm)

"""Mouth trajectories: articulation targets turned into movement a real mouth can make.

The viseme model says *which* frames need the lips together (/p b m/) or the lower lip
at the teeth (/f v/). Pressing exactly those frames shut, with steep ramps around them,
made the mouth of issue 20: closures that lasted one frame between two open ones
(open -> shut -> open in 80 ms at 25 fps; real mouths do that in about 3 % of their
closures), per-frame jumps larger than the person ever makes, a mouth 1.3x as fast as
the person's own. A real bilabial closure is approached, held and released:

1. **Held long enough to be seen.** A closure lasts at least ``MIN_CLOSURE_S`` (about
   two frames at 25 fps; lips stay together 50-100 ms even in fast speech). A stop
   shorter than that is held over its quieter neighbouring frame as well (the stop's
   own silence or murmur). Lip-teeth contacts are held at their own level the same way.
2. **Approached and released smoothly.** The curve is the smoothest one (least squared
   acceleration) that stays near the speech's targets and passes through every closure,
   never above the targets: a penalised least-squares problem with a five-band matrix,
   solved in O(n). The frames around a closure come down part of the way (what a
   phonetician calls coarticulation) instead of a vowel snapping shut, and a peak the
   mouth could reach only with a jerk is shaved (issue 20's per-frame jumps). A vowel
   squeezed between two closures still opens part of the way (``_KEEP``).
3. **Never faster than the person.** Ramps into and out of closures are limited per
   frame, in the person's own units and in seconds, not frames, so 50 fps video moves
   as fast per second as 25 fps video does.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solveh_banded
from scipy.ndimage import maximum_filter1d

# Bilabial closures in running speech hold the lips together for 50-100 ms (the stop's
# silence or the nasal's murmur); below ~70 ms a viewer sees a flicker, not a closure.
MIN_CLOSURE_S = 0.07
# Stiffness of the acceleration penalty, as the curve's smoothing length (and the time
# over which a closure's pull on its neighbours fades). 45 ms: at 25 fps the frame on
# each side of a closure comes down part of the way, two frames out little. Shorter
# lengths left more jerky peaks (bench/motion.py: more jumps, a faster mouth); longer
# ones take the loudest vowels of real speech down further (tests/speech/test_mouth.py
# bounds that).
SMOOTHING_S = 0.045
# How firmly closure (and lip-teeth) frames are held at their level against the
# smoothness: high, so they land within a few percent of the person's closed shape.
_HOLD_WEIGHT = 60.0
# A frame next to a closure keeps at least this share of its own opening above the closed
# level: a vowel squeezed between two stops ("mama") is short, and a real jaw still opens
# for it part of the way (the smooth curve alone all but closed it). Only there: as a
# floor everywhere it undid the shaving of jerky peaks (more jumps on bench/motion.py).
_KEEP = 0.4
# Extra weight of a vowel nucleus against the smoothing (at posterior 1): an open vowel
# is the target the jaw moves for, not a jerk to shave (without it 7 % of open vowels
# were rendered closed on bench/articulation.py, 2 % before the trajectory).
_NUCLEUS_WEIGHT = 8.0


def min_closure_frames(fps: float) -> int:
    """Frames a closure lasts at least at ``fps`` (2 at 24-30 fps, 4 at 50-60)."""
    return max(1, int(np.ceil(MIN_CLOSURE_S * fps - 1e-6)))


def hold_closures(closed: np.ndarray, rank: np.ndarray, n_min: int) -> np.ndarray:
    """``closed`` with every run shorter than ``n_min`` frames grown to ``n_min``, each
    step taking the neighbour with the lower ``rank`` (the speech's loudness: lips
    together let little sound out, so the quieter side is the stop's own silence or
    murmur, the louder one its vowel), never past the clip's ends."""
    out = np.asarray(closed, bool).copy()
    n = out.size
    if n_min <= 1 or not out.any():
        return out
    edges = np.flatnonzero(np.diff(np.r_[0, out.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        lo, hi = int(a), int(b)
        while hi - lo < n_min and (lo > 0 or hi < n):
            left = rank[lo - 1] if lo > 0 else np.inf
            right = rank[hi] if hi < n else np.inf
            if left <= right:
                lo -= 1
            else:
                hi += 1
        out[lo:hi] = True
    return out


def smooth_through(target: np.ndarray, weight: np.ndarray, stiffness: float) -> np.ndarray:
    """The curve ``x`` minimising ``sum w (x - target)^2 + stiffness * sum (x'')^2``.

    The normal equations ``(W + s D'D) x = W t`` (``D`` the second difference) are
    symmetric positive definite with five bands, so one banded Cholesky solves them.
    """
    t = np.asarray(target, np.float64)
    w = np.asarray(weight, np.float64)
    n = t.size
    if n < 3 or stiffness <= 0:
        return t.copy()
    # D'D for the second difference, in upper banded form (rows: 2 above, 1 above, diag).
    diag = np.full(n, 6.0)
    diag[[0, -1]] = 1.0
    diag[[1, -2]] = 5.0
    off1 = np.full(n - 1, -4.0)
    off1[[0, -1]] = -2.0
    off2 = np.ones(n - 2)
    ab = np.zeros((3, n))
    ab[2] = w + stiffness * diag
    ab[1, 1:] = stiffness * off1
    ab[0, 2:] = stiffness * off2
    return np.asarray(solveh_banded(ab, w * t))


def lower_limit(x: np.ndarray, step: float) -> np.ndarray:
    """Lower ``x`` where a neighbour is much lower, never raise it: ramps of at most
    ``step`` per frame into and out of every low, on both sides."""
    y = np.asarray(x, np.float64).copy()
    for i in range(1, y.size):
        y[i] = min(y[i], y[i - 1] + step)
    for i in range(y.size - 2, -1, -1):
        y[i] = min(y[i], y[i + 1] + step)
    return y


def articulate(opening: np.ndarray, held: np.ndarray, labio: np.ndarray,
               speech: np.ndarray, *, fps: float, closed_level: float, labio_level: float,
               step: float, nucleus: np.ndarray | None = None) -> np.ndarray:
    """``opening`` with closures and lip-teeth contacts imposed.

    ``held`` are the frames whose lips are together (the closures, grown by
    :func:`hold_closures`), ``labio`` those with the lower lip at the teeth, ``speech``
    the activity (0..1: only speech frames are drawn toward a contact, a pause keeps its
    rest); ``step`` the largest per-frame change into and out of them. ``nucleus`` (0..1,
    e.g. the open-vowel posterior) marks the frames whose opening is itself an
    articulatory target: the smoothing holds them near their level instead of shaving
    them like a transient.
    """
    x = np.asarray(opening, np.float64)
    held = np.asarray(held, bool)
    labio = np.asarray(labio, bool) & ~held
    # The smoothest curve (least squared acceleration) that stays near the speech's
    # targets and passes through every closure, never above the targets: a peak the
    # mouth could only reach with a jerk is shaved, a closure's neighbours come down part
    # of the way. Lip-teeth contacts are held the same way at their own level (left out,
    # each was a one-frame dip: an open -> shut -> open flicker on an independent track).
    target = x.copy()
    target[labio] = np.minimum(target[labio], labio_level)
    target[held] = closed_level
    weight = np.where(held | labio, _HOLD_WEIGHT, 1.0)
    if nucleus is not None:
        weight = weight + np.where(held | labio, 0.0, _NUCLEUS_WEIGHT * np.asarray(nucleus))
    stiffness = (SMOOTHING_S * fps) ** 4
    y = np.minimum(smooth_through(target, weight, stiffness), x)
    y = np.maximum(y, np.minimum(closed_level, x))  # no overshoot below a closed mouth
    near = maximum_filter1d(held.astype(np.uint8), 5).astype(bool) & ~held
    y = np.where(near, np.maximum(y, closed_level + _KEEP * (x - closed_level)), y)
    y = np.where(np.asarray(speech) > 0.5, y, x)
    y[held] = closed_level
    y[labio] = np.minimum(y[labio], labio_level)
    return lower_limit(y, step)

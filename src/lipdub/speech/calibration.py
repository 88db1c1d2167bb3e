"""Self-calibration: a per-person ridge model from articulation cues to the mouth.

Learnt from the source video's own frames and audio, and blended into the generic score
only as far as it beats it on held-back blocks of that source (a few seconds of one
person teach little, and a model that learnt an audio/video offset must not win).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Offsets (frames) of the context a calibration sees; skewed to the future because the
# mouth moves ahead of the sound it makes.
_CONTEXT = (-1, 0, 1, 2)
_RIDGE_ALPHAS = (30.0, 300.0)
# The calibrated score never takes over completely: a source clip is seconds long, and a
# model that drifts away from the new speech's own dynamics looks dubbed-over even when it
# matched the source's quirks (or its audio/video offset) better.
_BLEND_WEIGHTS = (0.0, 0.25, 0.5)
# A calibration must beat the generic score by this much held-back r, and in most blocks,
# before it is trusted: on a few hundred frames, smaller gains are noise of the split
# (measured: a 0.03 margin accepted calibrations that then lost on the clip's other half).
_CALIBRATION_MARGIN = 0.08
_CALIBRATION_MIN_FRAMES = 150


@dataclass
class Calibration:
    """Ridge weights from context-stacked articulation cues to one measured quantity."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    weight: float  # share of the calibrated score in the blend (0 = generic only)
    r_generic: float  # held-back r of the generic score
    r_blend: float  # held-back r of the chosen blend

    def predict(self, cues: np.ndarray) -> np.ndarray:
        x = (stack_context(cues) - self.mean) / self.scale
        return np.asarray(x @ self.coef + self.intercept)


def stack_context(cues: np.ndarray) -> np.ndarray:
    n = cues.shape[0]
    cols = []
    for off in _CONTEXT:
        idx = np.clip(np.arange(n) + off, 0, n - 1)
        cols.append(cues[idx])
    return np.concatenate(cols, axis=1)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def zscore(x: np.ndarray) -> np.ndarray:
    return np.asarray((x - x.mean()) / (x.std() + 1e-9))


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    ym = float(y.mean())
    a = x.T @ x + alpha * np.eye(x.shape[1])
    return np.linalg.solve(a, x.T @ (y - ym)), ym


def fit_calibration(
    cues: np.ndarray,
    generic: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    folds: int = 4,
    min_agreement: float | None = None,
) -> Calibration | None:
    """Fit ridge(cues in context -> target); keep it only if it beats ``generic`` held back.

    Folds are contiguous blocks, not random frames: neighbouring frames are nearly copies
    of each other, so random splits would leak and make any model look good. Each block is
    scored on its own (correlation within the block) because only the shape of the curve
    survives the range mapping, not its level.
    """
    idx = np.flatnonzero(valid)
    if idx.size < _CALIBRATION_MIN_FRAMES:
        return None
    xs = stack_context(cues)
    mean = xs[idx].mean(0)
    scale = xs[idx].std(0) + 1e-6
    x = (xs - mean) / scale
    blocks = np.array_split(idx, folds)
    best: tuple[float, float, float, int] | None = None  # (r_blend, weight, alpha, wins)
    r_gen = 0.0
    for alpha in _RIDGE_ALPHAS:
        preds, gens = [], []
        for k, held in enumerate(blocks):
            train = np.concatenate([blk for j, blk in enumerate(blocks) if j != k])
            coef, icpt = _ridge(x[train], target[train], alpha)
            preds.append(zscore(x[held] @ coef + icpt))
            gens.append(zscore(generic[held]))
        truths = [target[b] for b in blocks]
        r_gen = float(np.mean([pearson(g, t) for g, t in zip(gens, truths, strict=True)]))
        for w in _BLEND_WEIGHTS:
            per_block = [
                pearson(w * p + (1 - w) * g, t)
                for p, g, t in zip(preds, gens, truths, strict=True)
            ]
            gen_block = [pearson(g, t) for g, t in zip(gens, truths, strict=True)]
            wins = sum(a > b for a, b in zip(per_block, gen_block, strict=True))
            r = float(np.mean(per_block))
            if best is None or r > best[0] + 1e-9:
                best = (r, w, alpha, wins)
    assert best is not None
    r_blend, weight, alpha, wins = best
    if weight == 0.0 or r_blend < r_gen + _CALIBRATION_MARGIN or wins < folds - 1:
        weight = 0.0
        r_blend = r_gen
    coef, icpt = _ridge(x[idx], target[idx], alpha)
    cal = Calibration(mean, scale, coef, icpt, weight, r_gen, r_blend)
    if weight > 0 and min_agreement is not None:
        agree = pearson(cal.predict(cues)[idx], generic[idx])
        if agree < min_agreement:
            cal.weight, cal.r_blend = 0.0, r_gen
    return cal


def apply_calibration(
    cal: Calibration | None, cues: np.ndarray, generic: np.ndarray
) -> np.ndarray:
    if cal is None or cal.weight <= 0:
        return generic
    return np.asarray(cal.weight * zscore(cal.predict(cues)) + (1 - cal.weight) * zscore(generic))

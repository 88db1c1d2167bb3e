"""Articulation cues per video frame: what the speech says the mouth is doing.

Acoustic cues (speech activity, loudness envelope, F1-region openness, spreading and
rounding from F2 and the spectral centroid, unvoiced frication, bilabial closure dips)
normalised against the clip's own level statistics, beside the viseme posteriors; and
the generic opening score built from them. Shared by the person's profile (which reads
the source's own audio) and the targets (which read the new speech). Imports features
and visemes only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from lipdub.speech.features import SILENCE_DB, FrameFeatures
from lipdub.speech.visemes import (
    BILABIAL,
    CLASSES,
    CONS,
    LABIODENTAL,
    MID,
    OPEN,
    ROUND,
    SIL,
    SPREAD,
    FrameVisemes,
)

# How far each viseme opens the jaw, 0 (lips together) .. 1 (an open vowel like /a/).
_VISEME_OPEN = np.zeros(len(CLASSES))
for _k, _v in ((SIL, 0.0), (BILABIAL, 0.0), (LABIODENTAL, 0.12), (ROUND, 0.42),
               (SPREAD, 0.48), (OPEN, 1.0), (MID, 0.7), (CONS, 0.38)):
    _VISEME_OPEN[_k] = _v


@dataclass
class Cues:
    act: np.ndarray  # 0..1 speech activity
    env: np.ndarray  # 0..1 loudness envelope
    jaw: np.ndarray  # 0..1 F1-based openness
    spread: np.ndarray  # z-score, + for i/e, - for u/o
    rounding: np.ndarray  # 0..1
    fric: np.ndarray  # 0..1 unvoiced-fricative likeness (teeth close, lips apart a little)
    closure: np.ndarray  # 0..1 bilabial closure likeness
    voicing: np.ndarray
    gate: np.ndarray  # 1 within a syllable's reach of voiced speech
    vis: FrameVisemes | None = None  # viseme posteriors (None: acoustic cues alone)

    def matrix(self) -> np.ndarray:
        cols = [self.act, self.env, self.jaw, self.spread, self.rounding, self.fric,
                self.closure, self.voicing, self.env * self.jaw]
        if self.vis is not None:
            cols += [self.vis.post[:, k] for k in range(len(CLASSES))]
        return np.stack(cols, axis=1)

    def viseme_open(self) -> np.ndarray:
        """0..1 openness the visemes call for (open vowels 1, closures 0), speech only."""
        if self.vis is None:
            return np.asarray(self.jaw)
        p = self.vis.post
        speech = np.maximum(1.0 - p[:, SIL], 0.2)
        return np.asarray(np.clip((p @ _VISEME_OPEN) / speech, 0.0, 1.0))


def sig(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -30, 30))))


def _robust_z(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """z-score against frames weighted by ``w`` (the speech), robust to a few outliers."""
    sel = w > 0.5
    ref = x[sel] if sel.sum() >= 5 else x
    med = float(np.median(ref))
    mad = float(np.median(np.abs(ref - med))) * 1.4826 + 1e-6
    return np.asarray(np.clip((x - med) / mad, -4, 4))


def activity(loud: np.ndarray) -> np.ndarray:
    """Soft speech activity from the clip's own level statistics (no absolute threshold
    except digital silence), so it adapts to recording level and noise floor."""
    live = loud > SILENCE_DB + 1
    if live.sum() < 3:
        return np.zeros_like(loud)
    ref = float(np.percentile(loud[live], 95))
    floor = float(np.percentile(loud[live], 5))
    # Between noise floor and speech peaks; never demand more than 30 dB below the peaks
    # (pauses in noisy rooms), never accept less than 6 dB under them (continuous singing).
    thr = min(max(floor + 0.4 * (ref - floor), ref - 30.0), ref - 6.0)
    thr = max(thr, -72.0)
    return sig((loud - thr) / 2.5) * live


def _voiced_gate(ff: FrameFeatures) -> np.ndarray:
    """1 near voiced speech (within a syllable's reach), 0 elsewhere.

    Level statistics alone would call steady noise or room tone "speech" (it is loud
    relative to itself); every language's speech has voiced stretches, noise has none.
    """
    v = ff.voicing
    voiced = np.zeros(v.shape[0], bool)
    if v.shape[0] >= 2:
        run = (v[1:] > 0.65) & (v[:-1] > 0.65)
        voiced[1:] |= run
        voiced[:-1] |= run
    reach = max(1, int(round(0.4 * ff.fps)))
    gate = maximum_filter1d(voiced.astype(np.float64), 2 * reach + 1)
    return np.asarray(uniform_filter1d(gate, 3))


def articulation_cues(ff: FrameFeatures, vis: FrameVisemes | None = None) -> Cues:
    loud = ff.loudness
    gate = _voiced_gate(ff)
    act = activity(loud) * gate
    live = loud > SILENCE_DB + 1
    ref = float(np.percentile(loud[live], 95)) if live.sum() >= 3 else 0.0
    env = np.clip((loud - ref + 30.0) / 30.0, 0.0, 1.0) * act
    b = ff.bands
    # F1 region against the low vowel region: open vowels (a) push energy to 600-1100 Hz.
    jaw_raw = b[:, 2] - b[:, 1]
    jaw = sig(0.9 * _robust_z(jaw_raw, act))
    spread = _robust_z((b[:, 4] - b[:, 2]) + 0.5 * (ff.centroid - np.median(ff.centroid)), act)
    rounding = sig(-1.2 * spread - 0.8) * act
    # Unvoiced, noisy, high-frequency frames: s/f/sh. The jaw is nearly closed there.
    hf = _robust_z(b[:, 6] - b[:, 2], act)
    fric = sig(3.0 * (ff.flatness - 0.3)) * sig(4.0 * (0.45 - ff.voicing)) * sig(hf)
    fric = fric * act
    # Bilabials: a short deep dip inside speech (p/b stop gap) or a voiced murmur with the
    # energy in the low band and little above 1 kHz (m).
    closure = _closures(loud, act, ff)
    return Cues(act, env, jaw, spread, rounding, fric, closure, ff.voicing * act, gate, vis)


def _closures(loud: np.ndarray, act: np.ndarray, ff: FrameFeatures) -> np.ndarray:
    n = loud.shape[0]
    out = np.zeros(n)
    if n < 3:
        return out
    pad = np.concatenate([np.full(3, SILENCE_DB), loud, np.full(3, SILENCE_DB)])
    left = np.max(np.stack([pad[3 - k : 3 - k + n] for k in (1, 2, 3)]), axis=0)
    right = np.max(np.stack([pad[3 + k : 3 + k + n] for k in (1, 2, 3)]), axis=0)
    # Depth of the valley below the lower of its two shoulders; both shoulders must be
    # speech, otherwise it is the start or end of a pause, not a consonant.
    depth = np.minimum(left, right) - loud
    act_pad = np.concatenate([np.zeros(3), act, np.zeros(3)])
    shoulders = np.minimum(
        np.max(np.stack([act_pad[3 - k : 3 - k + n] for k in (1, 2, 3)]), axis=0),
        np.max(np.stack([act_pad[3 + k : 3 + k + n] for k in (1, 2, 3)]), axis=0),
    )
    gap = sig((depth - 9.0) / 2.0) * shoulders
    # A quiet 10 ms inside a frame is a stop closure only with speech on both sides; at
    # the edge of a pause it is just the pause.
    dip = sig((ff.dip - 12.0) / 3.0) * act * shoulders
    nasal_raw = ff.bands[:, 0] - ff.bands[:, 4]
    nasal = sig(1.5 * (_robust_z(nasal_raw, act) - 1.5)) * sig(6 * (ff.voicing - 0.5)) * act
    return np.clip(np.maximum.reduce([gap, 0.5 * dip, 0.6 * nasal]), 0.0, 1.0)


def generic_open(c: Cues) -> np.ndarray:
    if c.vis is not None:
        # What the sound is (the viseme) sets the shape; how loud it is, the emphasis.
        score = c.act * (0.6 * c.viseme_open() + 0.25 * c.env / max(float(c.env.max()), 1e-6)
                         + 0.15 * c.jaw)
        return np.asarray(score * (1.0 - 0.9 * c.vis.bilabial))
    score = 0.5 * c.env + 0.3 * c.jaw * c.act + 0.2 * c.voicing
    score = score * (1.0 - 0.85 * c.closure) * (1.0 - 0.45 * c.fric)
    return np.asarray(score)

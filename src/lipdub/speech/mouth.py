"""Audio to per-frame mouth-shape targets, in the person's own measured units.

The renderer picks, for every output frame, a real appearance of the person's mouth whose
measured ``(mouth_opening, mouth_width)`` is nearest the target; so targets here are in
those units (``lipdub.faces.geometry``) and stay inside what that person's mouth really did.

Pipeline (all per video frame):

1. Acoustic features (``features.frame_features``), normalised against the clip's own
   level statistics, so a quiet phone recording and a loud studio take behave the same.
2. A generic, language-independent articulation score: speech activity, a loudness
   envelope, jaw opening from the F1 region, spreading/rounding from F2 and the spectral
   centroid, bilabial closures from short energy dips between voiced stretches and nasal
   murmur. Loudness is one cue among several, not the target.
3. Optionally a per-person ridge model (self-calibration) learnt from the source video's
   own frames and audio, blended in only as far as it beats the generic score on held-back
   blocks of that source.
4. The score mapped onto the person's own range of opening/width while
   speaking (an affine map anchored at their quantiles); pauses go to their rest
   posture, not pressed shut.
5. Zero-phase smoothing (openings quicker than closings) tuned until the mean
   frame-to-frame speed matches the person's, a half-frame lead (the mouth forms before
   the sound), and a per-frame rate limit at the person's own fastest real movement, so
   there are no closed-to-wide snaps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from lipdub.errors import InputError
from lipdub.faces.geometry import mouth_opening, mouth_width
from lipdub.speech.features import SILENCE_DB, FrameFeatures, frame_features
from lipdub.speech.trajectory import articulate
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
    frame_visemes,
)

_Q = np.linspace(0.0, 1.0, 101)
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
# The mouth forms a sound slightly before it is heard. Half a frame, not one: the
# benchmark's best lag must stay in -1..+2, and a one-frame lead put every clip at -1
# (the edge) while lowering r at lag 0 (bench: r 0.64 at 1.0 vs 0.72 at 0.5).
_LEAD_FRAMES = 0.5
# Speed is matched on speech frames, a little above the person's: the dub's pauses (mouth
# at rest) lower the speed over a whole clip by 15-35% on the bench dubs, so 1.15 lands
# whole-clip speed near 1 while speech itself stays within 1.2 of the person's.
_SPEED_TARGET = 1.15
# A speaking mouth spans at least this much opening (inner-lip gap / inter-ocular distance);
# the bench speakers span 0.12-0.35. Below it the source shows no speech to learn from.
_MIN_SPEAKING_SPAN = 0.06
_GENERIC_SPAN = 0.25
_MIN_SPEED_PER_SPAN = 0.08


@dataclass
class MouthTargets:
    """Per-frame targets; ``open``/``width`` in geometry units, the rest 0..1."""

    open: np.ndarray
    width: np.ndarray
    rounding: np.ndarray
    closure: np.ndarray
    speaking: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 0..1 activity


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
        x = (_stack_context(cues) - self.mean) / self.scale
        return np.asarray(x @ self.coef + self.intercept)


@dataclass
class SpeakerProfile:
    """How one person's mouth moves when they speak, measured on their source frames."""

    fps: float
    rest_open: float  # median opening in pauses
    rest_width: float
    open_q: np.ndarray  # 101 quantiles of opening while speaking
    width_q: np.ndarray  # 101 quantiles of width while speaking
    speed: float  # mean |frame-to-frame change| of opening while speaking
    max_step: float  # the largest per-frame change we allow (the person's 99th percentile)
    width_step: float = 0.05  # the same for mouth width
    n_frames: int = 0
    n_speaking: int = 0
    open_cal: Calibration | None = None
    width_cal: Calibration | None = None


# ---------------------------------------------------------------------------- cues


# How far each viseme opens the jaw, 0 (lips together) .. 1 (an open vowel like /a/).
_VISEME_OPEN = np.zeros(len(CLASSES))
for _k, _v in ((SIL, 0.0), (BILABIAL, 0.0), (LABIODENTAL, 0.12), (ROUND, 0.42),
               (SPREAD, 0.48), (OPEN, 1.0), (MID, 0.7), (CONS, 0.38)):
    _VISEME_OPEN[_k] = _v


@dataclass
class _Cues:
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


def _sig(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -30, 30))))


def _robust_z(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """z-score against frames weighted by ``w`` (the speech), robust to a few outliers."""
    sel = w > 0.5
    ref = x[sel] if sel.sum() >= 5 else x
    med = float(np.median(ref))
    mad = float(np.median(np.abs(ref - med))) * 1.4826 + 1e-6
    return np.asarray(np.clip((x - med) / mad, -4, 4))


def _activity(loud: np.ndarray) -> np.ndarray:
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
    return _sig((loud - thr) / 2.5) * live


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


def _cues(ff: FrameFeatures, vis: FrameVisemes | None = None) -> _Cues:
    loud = ff.loudness
    gate = _voiced_gate(ff)
    act = _activity(loud) * gate
    live = loud > SILENCE_DB + 1
    ref = float(np.percentile(loud[live], 95)) if live.sum() >= 3 else 0.0
    env = np.clip((loud - ref + 30.0) / 30.0, 0.0, 1.0) * act
    b = ff.bands
    # F1 region against the low vowel region: open vowels (a) push energy to 600-1100 Hz.
    jaw_raw = b[:, 2] - b[:, 1]
    jaw = _sig(0.9 * _robust_z(jaw_raw, act))
    spread = _robust_z((b[:, 4] - b[:, 2]) + 0.5 * (ff.centroid - np.median(ff.centroid)), act)
    rounding = _sig(-1.2 * spread - 0.8) * act
    # Unvoiced, noisy, high-frequency frames: s/f/sh. The jaw is nearly closed there.
    hf = _robust_z(b[:, 6] - b[:, 2], act)
    fric = _sig(3.0 * (ff.flatness - 0.3)) * _sig(4.0 * (0.45 - ff.voicing)) * _sig(hf)
    fric = fric * act
    # Bilabials: a short deep dip inside speech (p/b stop gap) or a voiced murmur with the
    # energy in the low band and little above 1 kHz (m).
    closure = _closures(loud, act, ff)
    return _Cues(act, env, jaw, spread, rounding, fric, closure, ff.voicing * act, gate, vis)


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
    gap = _sig((depth - 9.0) / 2.0) * shoulders
    # A quiet 10 ms inside a frame is a stop closure only with speech on both sides; at
    # the edge of a pause it is just the pause.
    dip = _sig((ff.dip - 12.0) / 3.0) * act * shoulders
    nasal_raw = ff.bands[:, 0] - ff.bands[:, 4]
    nasal = _sig(1.5 * (_robust_z(nasal_raw, act) - 1.5)) * _sig(6 * (ff.voicing - 0.5)) * act
    return np.clip(np.maximum.reduce([gap, 0.5 * dip, 0.6 * nasal]), 0.0, 1.0)


def _generic_open(c: _Cues) -> np.ndarray:
    if c.vis is not None:
        # What the sound is (the viseme) sets the shape; how loud it is, the emphasis.
        score = c.act * (0.6 * c.viseme_open() + 0.25 * c.env / max(float(c.env.max()), 1e-6)
                         + 0.15 * c.jaw)
        return np.asarray(score * (1.0 - 0.9 * c.vis.bilabial))
    score = 0.5 * c.env + 0.3 * c.jaw * c.act + 0.2 * c.voicing
    score = score * (1.0 - 0.85 * c.closure) * (1.0 - 0.45 * c.fric)
    return np.asarray(score)


# ---------------------------------------------------------------------- calibration


def _stack_context(cues: np.ndarray) -> np.ndarray:
    n = cues.shape[0]
    cols = []
    for off in _CONTEXT:
        idx = np.clip(np.arange(n) + off, 0, n - 1)
        cols.append(cues[idx])
    return np.concatenate(cols, axis=1)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _zs(x: np.ndarray) -> np.ndarray:
    return np.asarray((x - x.mean()) / (x.std() + 1e-9))


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    ym = float(y.mean())
    a = x.T @ x + alpha * np.eye(x.shape[1])
    return np.linalg.solve(a, x.T @ (y - ym)), ym


def _calibrate(
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
    xs = _stack_context(cues)
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
            preds.append(_zs(x[held] @ coef + icpt))
            gens.append(_zs(generic[held]))
        truths = [target[b] for b in blocks]
        r_gen = float(np.mean([_pearson(g, t) for g, t in zip(gens, truths, strict=True)]))
        for w in _BLEND_WEIGHTS:
            per_block = [
                _pearson(w * p + (1 - w) * g, t)
                for p, g, t in zip(preds, gens, truths, strict=True)
            ]
            gen_block = [_pearson(g, t) for g, t in zip(gens, truths, strict=True)]
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
        agree = _pearson(cal.predict(cues)[idx], generic[idx])
        if agree < min_agreement:
            cal.weight, cal.r_blend = 0.0, r_gen
    return cal


def _apply_calibration(
    cal: Calibration | None, cues: np.ndarray, generic: np.ndarray
) -> np.ndarray:
    if cal is None or cal.weight <= 0:
        return generic
    return np.asarray(cal.weight * _zs(cal.predict(cues)) + (1 - cal.weight) * _zs(generic))


# ---------------------------------------------------------------------------- profile


def _consecutive_diffs(values: np.ndarray, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    ok = (np.diff(frames) == 1) & mask[1:] & mask[:-1]
    return np.abs(np.diff(values))[ok]


def build_profile(
    landmarks: np.ndarray,
    fps: float,
    source_audio: np.ndarray | None = None,
    sr: int = 16000,
    frames: np.ndarray | None = None,
    *,
    frame_times_ms: np.ndarray | None = None,
    calibrate: bool = True,
) -> SpeakerProfile:
    """Measure how this person's mouth moves, from their source frames (and audio).

    ``landmarks`` is ``(N, 68, 2)`` (dlib layout) for video frames ``frames`` (default
    ``0..N-1``; gaps allowed). ``source_audio`` is the video's own track (mono or
    ``(n, ch)``), sample 0 at 0 ms; with it, pauses and speech are told apart and the
    person's audio-to-mouth mapping is self-calibrated; without it, every frame counts as
    speech. ``frame_times_ms`` (the session's per-frame times for the whole video, e.g.
    ``Session.frame_times_ms``) replaces ``index / fps`` for variable-frame-rate video.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise InputError(f"Landmarks must be shaped (N, 68, 2), got {lm.shape}.")
    fr = np.arange(lm.shape[0]) if frames is None else np.asarray(frames, dtype=np.int64)
    if fr.shape[0] != lm.shape[0]:
        raise InputError("Landmarks and frame indices differ in length: pass one index per row.")
    good = np.isfinite(lm).all(axis=(1, 2))
    lm, fr = lm[good], fr[good]
    if lm.shape[0] < 10:
        raise InputError(
            f"Only {lm.shape[0]} frames show this face: the mouth model needs at least 10."
        )
    order = np.argsort(fr)
    lm, fr = lm[order], fr[order]
    op = mouth_opening(lm)
    wd = mouth_width(lm)

    speaking = np.ones(op.shape[0], bool)
    pauses = np.zeros(op.shape[0], bool)
    cues_m: np.ndarray | None = None
    gen_o = None
    if source_audio is not None and np.asarray(source_audio).size > 0:
        n_video = int(fr.max()) + 1
        times = None
        if frame_times_ms is not None:
            all_times = np.asarray(frame_times_ms, dtype=np.float64)
            if all_times.shape[0] < n_video:
                raise InputError(
                    f"frame_times_ms has {all_times.shape[0]} entries but frame {n_video - 1} "
                    "is used: pass the times of every video frame."
                )
            times = all_times[:n_video]
        ff = frame_features(source_audio, sr, fps, n_video, times_ms=times)
        c = _cues(ff, frame_visemes(source_audio, sr, fps, n_video, times_ms=times))
        act = c.act[fr]
        if (act > 0.5).sum() >= 20:
            speaking = act > 0.5
        pauses = act < 0.2
        cues_m = c.matrix()
        gen_o = _generic_open(c)

    o_sp, w_sp = op[speaking], wd[speaking]
    # A relaxed mouth sits near the low end of the speaking range: lips together or just
    # parted, never pressed (below the 5th percentile) and never as open as a typical vowel
    # (the 8-25 % band first used left dubbed pauses visibly parted on the bench). The measured
    # pause median is used inside that band only: in short clips "pauses" are few frames,
    # often breaths or hesitations with the mouth still open.
    lo_rest, hi_rest = np.percentile(o_sp, [5, 15])
    if pauses.sum() >= 5:
        rest_o = float(np.clip(np.median(op[pauses]), lo_rest, hi_rest))
        rest_w = float(np.median(wd[pauses]))
    else:
        rest_o = float(np.percentile(o_sp, 10))
        rest_w = float(np.percentile(wd, 30))
    d = _consecutive_diffs(op, fr, speaking)
    if d.size < 5:
        d = _consecutive_diffs(op, fr, np.ones_like(speaking))
    span = float(np.percentile(o_sp, 95) - np.percentile(o_sp, 5))
    if span < _MIN_SPEAKING_SPAN:
        # The source never shows this mouth speaking (a photo, a silent listener): its own
        # range is unknown, so take a typical speaker's, starting from its resting shape.
        # The renderer opens such a mouth geometrically beyond what its bank holds.
        rest_o = float(np.median(op))
        o_sp = rest_o + _GENERIC_SPAN * np.linspace(0.0, 1.0, 101) ** 1.5
        span = float(np.percentile(o_sp, 95) - np.percentile(o_sp, 5))
        d = np.zeros(0)
    speed = float(d.mean()) if d.size else 0.1 * span
    # Speech opens and closes the mouth 4-6 times a second; raw landmark tracks of the
    # bench speakers move 0.11-0.18 of their range per frame while speaking. A track much
    # slower than that has been low-pass filtered (identify's smoothing measured 0.05-0.10)
    # and copying its speed would blur syllables together and lose sync.
    speed = max(speed, _MIN_SPEED_PER_SPAN * span)
    # The fastest the person really moves: the 99th percentile of their frame-to-frame
    # change, over speech and over the whole clip, whichever is lower (so our fastest
    # frames are never "snaps" by either measure). Never more than half their range in one
    # frame, even if the landmark track itself jumped (a detector glitch is not a movement).
    d_all = _consecutive_diffs(op, fr, np.ones_like(speaking))
    if d.size:
        p99 = float(np.percentile(d, 99))
        if d_all.size:
            p99 = min(p99, float(np.percentile(d_all, 99)))
        max_step = min(p99, 0.5 * span)
    else:
        max_step = 0.3 * span
    max_step = max(max_step, 1e-4)
    dw = _consecutive_diffs(wd, fr, np.ones_like(speaking))
    w_span = float(np.percentile(w_sp, 95) - np.percentile(w_sp, 5))
    width_step = float(min(np.percentile(dw, 99), 0.5 * w_span)) if dw.size else 0.3 * w_span
    width_step = max(width_step, 1e-4)

    prof = SpeakerProfile(
        fps=float(fps),
        rest_open=rest_o,
        rest_width=rest_w,
        open_q=np.quantile(o_sp, _Q),
        width_q=np.quantile(w_sp, _Q),
        speed=speed,
        max_step=max_step,
        width_step=width_step,
        n_frames=int(op.shape[0]),
        n_speaking=int(speaking.sum()),
    )
    if calibrate and cues_m is not None and gen_o is not None:
        full_o = np.zeros(cues_m.shape[0])
        valid = np.zeros(cues_m.shape[0], bool)
        full_o[fr], valid[fr] = op, True
        # Whatever a person's style, their mouth opens when they speak: a model whose
        # opening disagrees with the generic one has learnt an audio/video offset or a
        # tracking fault of this source (seen on the bench), not a way of speaking.
        prof.open_cal = _calibrate(cues_m, gen_o, full_o, valid, min_agreement=0.2)
        # Width is not calibrated: it follows the visemes (spread, rounded), which a few
        # seconds of one person's speech cannot teach better than they say it.
    return prof


# ---------------------------------------------------------------------------- targets


def _range_map(score: np.ndarray, ref: np.ndarray, q_target: np.ndarray) -> np.ndarray:
    """Affine map of ``score`` putting its 5th/95th percentiles over ``ref`` (the speech
    frames) on the person's 5th/95th, clipped to the person's extremes.

    Full quantile mapping would also copy the person's distribution shape, but it bends
    the curve (most of a skewed range is squeezed into a few frames) and measurably loses
    sync with the sound (r 0.68 -> 0.61 on bench/mouth_curve.py); anchoring the range at
    the person's quantiles keeps their range and keeps the speech's own dynamics.
    """
    t_lo, t_hi = np.interp([0.05, 0.95], _Q, q_target)
    if ref.size < 3 or np.ptp(ref) < 1e-12:
        return np.full_like(score, float(np.median(q_target)))
    s_lo, s_hi = np.percentile(ref, [5, 95])
    if s_hi - s_lo < 1e-12:
        s_lo, s_hi = float(ref.min()), float(ref.max())
    out = t_lo + (score - s_lo) / (s_hi - s_lo) * (t_hi - t_lo)
    return np.asarray(np.clip(out, q_target[0], q_target[-1]))


def _asym_smooth(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    """One-pole smoother that rises with ``attack`` and falls with ``release`` (0..1)."""
    y = np.empty_like(x)
    prev = float(x[0]) if x.size else 0.0
    for i, v in enumerate(x):
        a = attack if v > prev else release
        prev = prev + a * (float(v) - prev)
        y[i] = prev
    return y


def _zero_phase_smooth(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    """Forward and time-reversed asymmetric smoothing, averaged: no net delay.

    A causal smoother delays the mouth by as much as it smooths (several frames for a
    slow speaker), which would put the mouth behind the sound. In the reversed pass an
    opening is a fall, so the coefficients swap to keep openings quick in both passes.
    """
    fwd = _asym_smooth(x, attack, release)
    bwd = _asym_smooth(x[::-1], release, attack)[::-1]
    return np.asarray(0.5 * (fwd + bwd))


def _rate_limit(x: np.ndarray, step: float) -> np.ndarray:
    """Forward and backward passes: no frame-to-frame change above ``step`` either way."""
    y = x.copy()
    for i in range(1, y.size):
        y[i] = min(max(y[i], y[i - 1] - step), y[i - 1] + step)
    for i in range(y.size - 2, -1, -1):
        y[i] = min(max(y[i], y[i + 1] - step), y[i + 1] + step)
    return y


def _shift_lead(x: np.ndarray, frames: float) -> np.ndarray:
    """Advance a per-frame curve by a (fractional) number of frames."""
    n = x.size
    t = np.arange(n) + frames
    return np.asarray(np.interp(t, np.arange(n), x))


def _shape_curve(
    score: np.ndarray,
    act: np.ndarray,
    closure: np.ndarray,
    prof: SpeakerProfile,
    q: np.ndarray,
    rest: float,
    step: float,
    tune_speed: bool,
    post: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """The score as a curve in the person's range and speed.

    ``post`` (articulation: closures and lip-teeth contacts) is applied inside the speed
    tuning, so the speed matched is that of the finished curve, closures included:
    closures added after the tuning (or left out of its measure) made the mouth 1.2-1.5x
    as fast as the person's on an independent track (bench/motion.py)."""

    def finish(y: np.ndarray) -> np.ndarray:
        return y if post is None else post(y)[0]
    speech = act > 0.5
    ref = score[speech] if speech.sum() >= 5 else score
    # Speech frames take the person's range from their rest posture upwards: the quietest
    # speech must not end up more closed than a pause (that inverts the sound-mouth link);
    # only bilabial closures go below rest, below.
    u_rest = float(np.interp(rest, q, _Q))
    q_speech = np.interp(u_rest + (1 - u_rest) * _Q, _Q, q)
    mapped = _range_map(score, ref, q_speech)
    act_s = _zero_phase_smooth(act, 0.6, 0.25)
    # Pauses relax toward the person's rest posture; closures press toward their closed end.
    closed = float(q[2])
    base = act_s * mapped + (1 - act_s) * rest
    base = base + closure * act_s * (closed - base) * 0.9
    base = _shift_lead(base, _LEAD_FRAMES)
    if not tune_speed or base.size < 4:
        return finish(_rate_limit(base, step))

    light = _zero_phase_smooth(base, 0.95, 0.8)

    def render(k: float) -> np.ndarray:
        # k = 0: barely smoothed; k = 1: heavily smoothed. Attack stays faster than release:
        # mouths snap open for a vowel and drift closed.
        # Geometric in k: smoothed (filtered) landmark tracks move slowly, and need
        # coefficients far below what raw detections do.
        att = 0.95 * (0.1 / 0.95) ** k
        rel = 0.8 * (0.06 / 0.8) ** k
        sm = _zero_phase_smooth(base, att, rel)
        # Smoothing shrinks the range; map it again so the person's range is kept.
        sm_ref = sm[speech] if speech.sum() >= 5 else sm
        remapped = _range_map(sm, sm_ref, q_speech)
        # Pauses take the lightly smoothed curve: the heavy smoothing a slow speaker's
        # speech needs would otherwise carry the speech's opening far into the pause.
        out = act_s * remapped + (1 - act_s) * light
        return finish(_rate_limit(out, step))

    def speed_of(y: np.ndarray) -> float:
        m = speech[1:] & speech[:-1]
        d = np.abs(np.diff(y))
        return float(d[m].mean()) if m.sum() >= 3 else float(d.mean())

    lo, hi = 0.0, 1.0
    best = render(0.5)
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        best = render(mid)
        if speed_of(best) > _SPEED_TARGET * prof.speed:
            lo = mid
        else:
            hi = mid
    return best


def closed_level(profile: SpeakerProfile) -> float:
    """The opening of lips pressed together for this person: their own most-closed
    speaking frames when those are closed, else (a mouth never shut in the source) a
    true closure that the renderer has to make. Landmarks put closed lips near 0."""
    return min(float(profile.open_q[1]), 0.25 * float(profile.open_q[50]))


def closing_step(profile: SpeakerProfile) -> float:
    """The largest per-frame change (at 25 fps) into and out of a closure: lips close and
    part over two or three frames in real speech (from a wide vowel to shut in ~100 ms),
    faster than the person's average movements that bound the rest of the curve."""
    return max(profile.max_step, 0.35 * float(profile.open_q[95] - profile.open_q[5]))


def width_range(profile: SpeakerProfile) -> tuple[float, float]:
    """(rounded, spread) width targets: spread at the person's wide end; rounded below
    anything an unrounding speaker shows (the renderer narrows the mouth geometrically
    where its bank has no such shape)."""
    wq = profile.width_q
    w_rest = profile.rest_width
    w_hi = max(float(wq[97]), w_rest)
    w_lo = min(float(wq[3]), w_rest) - 0.35 * max(float(wq[95] - wq[5]), 0.03 * w_rest)
    return w_lo, w_hi


def _lower_limit(x: np.ndarray, step: float) -> np.ndarray:
    """Lower ``x`` where a neighbour is much lower, never raise it: ramps of at most
    ``step`` per frame into and out of every forced low (a closure) on both sides."""
    y = x.copy()
    for i in range(1, y.size):
        y[i] = min(y[i], y[i - 1] + step)
    for i in range(y.size - 2, -1, -1):
        y[i] = min(y[i], y[i + 1] + step)
    return y


def _anticipate(x: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """Each frame takes the strongest of the coming frames' values, weighted by nearness:
    the lips form a rounding (or spreading) before its vowel is heard."""
    out = x.copy()
    n = x.size
    for k, w in enumerate(weights, start=1):
        if k < n:
            out[:-k] = np.maximum(out[:-k], w * x[k:])
    return out


def closure_frames(vis: FrameVisemes, gate: np.ndarray, loudness: np.ndarray) -> np.ndarray:
    """Frames whose lips must touch: a bilabial (p b m) is being said at the frame's
    instant (see ``FrameVisemes.bilabial`` for timing and short stops).

    Lips together let little sound out (a stop's silence, a nasal's hum below the speech
    band), so a frame that is about as loud as the loudest of its syllable is not taken
    as a closure whatever the model says: on real recordings, that is where its rare
    false closures fall (a loud vowel misheard as a murmur).
    """
    n = loudness.shape[0]
    peak = maximum_filter1d(loudness, 9) if n else loudness
    quiet = _sig((peak - loudness - 4.0) / 1.5)
    return np.asarray(vis.bilabial * (gate > 0.2) * quiet > 0.5)


@dataclass(frozen=True)
class SpeechAnalysis:
    """What :func:`mouth_targets` reads from the speech itself (no person involved), so it
    can be computed while the person's profile is being measured."""

    features: FrameFeatures
    visemes: FrameVisemes


def analyse_speech(samples: np.ndarray, sr: int, fps: float, n_frames: int,
                   start_ms: float = 0.0, *,
                   frame_times_ms: np.ndarray | None = None) -> SpeechAnalysis:
    """Acoustic features and visemes of ``samples`` at the video's frame times."""
    return SpeechAnalysis(
        frame_features(samples, sr, fps, n_frames, start_ms, times_ms=frame_times_ms),
        frame_visemes(samples, sr, fps, n_frames, start_ms, times_ms=frame_times_ms))


def mouth_targets(
    samples: np.ndarray,
    sr: int,
    fps: float,
    n_frames: int,
    profile: SpeakerProfile,
    start_ms: float = 0.0,
    *,
    frame_times_ms: np.ndarray | None = None,
    analysis: SpeechAnalysis | None = None,
) -> MouthTargets:
    """Per-video-frame mouth targets for ``samples``, in ``profile``'s person's own units.

    ``samples`` is the new speech alone (mono, or ``(n, ch)`` averaged), already placed on
    the video timeline: sample 0 at 0 ms, zeros outside the dubbed clip. Pass the dub, not
    the final mix: the original track's speech would move the mouth too. Frame ``k`` is at
    ``start_ms + k * 1000 / fps``, or at ``frame_times_ms[k]`` when given.

    Opening follows the visemes (jaw height by vowel, emphasis by loudness) in the
    person's range and speed; then articulation is imposed on top: lips pressed together
    for every bilabial frame however short (reached and left in ramps of at most
    ``closing_step``), nearly closed on /f v/; width spread on /i e/ and narrowed on
    rounded sounds, starting before them.
    """
    if n_frames <= 0:
        z = np.zeros(0)
        return MouthTargets(z, z, z, z, z)
    if frame_times_ms is not None and np.asarray(frame_times_ms).shape != (n_frames,):
        raise InputError("frame_times_ms must hold one time per output frame (n_frames).")
    if analysis is None:
        analysis = analyse_speech(samples, sr, fps, n_frames, start_ms,
                                  frame_times_ms=frame_times_ms)
    ff, vis = analysis.features, analysis.visemes
    c = _cues(ff, vis)
    cm = c.matrix()
    o_score = _apply_calibration(profile.open_cal, cm, _generic_open(c))
    closed = closure_frames(vis, c.gate, ff.loudness)
    labio = (vis.labiodental * (c.gate > 0.2) > 0.5) & ~closed
    q = profile.open_q
    span = float(q[95] - q[5])
    lo, hi = float(profile.open_q[0]), float(profile.open_q[-1])
    lo, hi = min(lo, profile.rest_open), max(hi, profile.rest_open)
    held = closed

    def with_articulation(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal held
        y, held = articulate(
            np.clip(curve, lo, hi), closed, labio, ff.loudness, c.act, fps=fps,
            closed_level=closed_level(profile),
            labio_level=min(float(q[10]), 0.45 * float(q[50])),
            step=closing_step(profile) * 25.0 / max(fps, 1.0))
        return y, held

    opening = _shape_curve(
        o_score, c.act, np.zeros(n_frames), profile, profile.open_q, profile.rest_open,
        profile.max_step, tune_speed=True, post=with_articulation,
    )  # fmt: skip

    speech = _zero_phase_smooth(np.clip(c.act, 0, 1), 0.6, 0.25)
    p = vis.post
    voiced = np.maximum(1.0 - p[:, SIL], 0.2)
    round_raw = np.clip(p[:, ROUND] / voiced, 0, 1) * speech
    spread_raw = np.clip(p[:, SPREAD] / voiced, 0, 1) * speech
    # Rounding is anticipated across up to three frames (~120 ms), spreading less.
    rounding = _zero_phase_smooth(_anticipate(round_raw, (0.9, 0.7, 0.45)), 0.7, 0.5)
    spreading = _zero_phase_smooth(_anticipate(spread_raw, (0.8, 0.5)), 0.7, 0.5)
    w_rest = profile.rest_width
    w_lo, w_hi = width_range(profile)
    open_frac = np.clip((opening - profile.rest_open) / max(span, 1e-6), 0, 1)
    width = (w_rest + spreading * (w_hi - w_rest) - rounding * (w_rest - w_lo)
             - 0.15 * open_frac * (w_rest - w_lo) * speech)
    width = _rate_limit(width, 2.0 * profile.width_step)
    return MouthTargets(
        open=opening.astype(np.float32),
        width=width.astype(np.float32),
        rounding=rounding.astype(np.float32),
        closure=held.astype(np.float32),
        speaking=c.act.astype(np.float32),
    )

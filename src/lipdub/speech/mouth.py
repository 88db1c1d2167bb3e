"""Audio to per-frame mouth-shape targets, in the person's own measured units.

The renderer picks, for every output frame, a real appearance of the person's mouth whose
measured ``(mouth_opening, mouth_width)`` is nearest the target; so targets here are in
those units (``lipdub.faces.geometry``) and stay inside what that person's mouth really did.

Pipeline (all per video frame):

1. What is being said: viseme posteriors (``visemes``: bilabial, lip-teeth, rounded,
   spread, open, mid, other, silence; a small network trained on many voices, languages
   and synthesizers), with acoustic cues beside them (``features``: speech activity,
   loudness envelope, F1-region openness, spreading and rounding, closure dips), all
   normalised against the clip's own level statistics.
2. An opening score: how far each viseme opens the jaw, weighted by speech activity,
   with loudness for emphasis. Optionally a per-person ridge model (self-calibration)
   learnt from the source video's own frames and audio, blended in only as far as it
   beats the generic score on held-back blocks of that source.
3. The score mapped onto the person's own range of opening while speaking (an affine map
   anchored at their quantiles); pauses go to their rest posture, not pressed shut.
4. Zero-phase smoothing (openings quicker than closings) and a half-frame lead (the mouth
   forms before the sound), with articulation imposed inside it (``trajectory``:
   closures held at least 70 ms and approached smoothly, lip-teeth contacts nearly
   closed), tuned until the finished curve moves as fast as the person does, and a
   per-frame limit at the person's own fastest real movement.
5. Width: spread on /i e/, narrowed on rounded sounds, both anticipated over the next
   frames (coarticulation), between the person's spread end and below their narrowest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import maximum_filter1d

from lipdub.errors import InputError
from lipdub.speech import visemes
from lipdub.speech.calibration import apply_calibration
from lipdub.speech.cues import articulation_cues, generic_open, sig
from lipdub.speech.features import FrameFeatures, frame_features
from lipdub.speech.profile import (
    QUANTILES,
    SpeakerProfile,
    build_profile,
    closed_level,
    closing_step,
    step_limit,
    width_range,
)
from lipdub.speech.trajectory import articulate, hold_closures, min_closure_frames
from lipdub.speech.visemes import MID, OPEN, ROUND, SIL, SPREAD, FrameVisemes, frame_visemes

__all__ = [
    "MouthTargets", "SpeakerProfile", "SpeechAnalysis", "analyse_speech", "build_profile",
    "closed_level", "closing_step", "closure_frames", "mouth_targets", "step_limit",
    "width_range",
]

# The mouth forms a sound slightly before it is heard. Half a frame, not one: the
# benchmark's best lag must stay in -1..+2, and a one-frame lead put every clip at -1
# (the edge) while lowering r at lag 0 (bench: r 0.64 at 1.0 vs 0.72 at 0.5).
_LEAD_FRAMES = 0.5
# Speed is matched on speech frames, a little above the person's: the dub's pauses (mouth
# at rest) lower the speed over a whole clip by 15-35% on the bench dubs, so 1.15 lands
# whole-clip speed near 1 while speech itself stays within 1.2 of the person's.
_SPEED_TARGET = 1.15
_MAX_SMOOTHING = 1.0
# How far openings may come down toward rest when smoothing alone cannot bring the mouth
# to the person's pace, all by one factor: used only with SHORT_UNDERSHOOT off.
# bench/motion.py (7 clips x en, flite awb, Festival ked): speed 1.16-1.27 -> 1.14-1.21
# at 0.8 (1.12-1.16 at 0.7); bench/articulation.py (espeak, dlib): at 0.7 one frame of
# KatieHill's Chinese dub turned into a glitch and 8 % of open vowels read closed, at 0.8
# no glitch, 7 %, open/bilabial as before (4.05).
_MIN_AMPLITUDE = 0.8
# Duration-dependent undershoot (what a real mouth does in fast speech): an opening of
# _SHORT_S or less between two lip contacts (closures, lip-teeth contacts, near-closures)
# takes the whole cut, down to _MIN_AMPLITUDE_SHORT of its height above rest; one of
# _LONG_S or more, or not between two contacts (a long vowel, speech without any),
# takes _UNDERSHOOT_ALL of it (at most 16.5 %). One factor for all (the old way, floor
# 0.8) left slow speakers 7 % over their pace on closure-dense speech (tests/speech/
# test_trajectory.py) and cut every vowel by a fifth: bench/quality.py's range ratio
# 0.78 -> 0.80, snaps 0.21 -> 0.14; bench/motion.py flite awb speed 1.19 -> 1.10, the
# rest within its run-to-run spread; bench/articulation.py (espeak, dlib) unchanged;
# bench/real_phones.py 0.70 -> 0.68 of recognised /p b m/ closed (0.31 -> 0.33 shifted).
SHORT_UNDERSHOOT = True
_MIN_AMPLITUDE_SHORT = 0.45
_UNDERSHOOT_ALL = 0.3
_SHORT_S = 0.12
_LONG_S = 0.36
NEAR_CLOSURES = True


@dataclass
class MouthTargets:
    """Per-frame targets; ``open``/``width`` in geometry units, the rest 0..1."""

    open: np.ndarray
    width: np.ndarray
    rounding: np.ndarray
    closure: np.ndarray
    speaking: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 0..1 activity


def _range_map(score: np.ndarray, ref: np.ndarray, q_target: np.ndarray) -> np.ndarray:
    """Affine map of ``score`` putting its 5th/95th percentiles over ``ref`` (the speech
    frames) on the person's 5th/95th, clipped to the person's extremes.

    Full quantile mapping would also copy the person's distribution shape, but it bends
    the curve (most of a skewed range is squeezed into a few frames) and measurably loses
    sync with the sound (r 0.68 -> 0.61 on bench/mouth_curve.py); anchoring the range at
    the person's quantiles keeps their range and keeps the speech's own dynamics.
    """
    t_lo, t_hi = np.interp([0.05, 0.95], QUANTILES, q_target)
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


def _shortness(contacts: np.ndarray, fps: float) -> np.ndarray:
    """0..1 per frame: how little time the opening a frame belongs to has between the
    lip contacts on either side of it (1: an opening of ``_SHORT_S`` or less between two
    contacts, counted in the frames between them; 0: ``_LONG_S`` or more, or not
    bounded by contacts on both sides). A real mouth undershoots the short openings of
    fast speech and still reaches its full height on a long vowel."""
    n = contacts.size
    idx = np.arange(n)
    c = np.flatnonzero(contacts)
    out = np.zeros(n)
    if c.size < 2:
        return out
    prev_c = np.searchsorted(c, idx, side="right") - 1  # last contact at or before
    next_c = np.searchsorted(c, idx, side="left")  # first contact at or after
    inside = (prev_c >= 0) & (next_c < c.size) & ~contacts
    gap = np.full(n, np.inf)
    gap[inside] = (c[next_c[inside]] - c[prev_c[inside]] - 1) / fps
    out = np.clip((_LONG_S - gap) / (_LONG_S - _SHORT_S), 0.0, 1.0)
    out[~inside] = 0.0
    return np.asarray(out)


def _shape_curve(score: np.ndarray, act: np.ndarray, prof: SpeakerProfile,
                 finish: Callable[[np.ndarray], np.ndarray], fps: float,
                 contacts: np.ndarray | None = None) -> np.ndarray:
    """The score as a curve in the person's opening range and speed, at ``fps``.

    ``finish`` (articulation: closures and lip-teeth contacts) is applied inside the speed
    tuning, so the speed matched is that of the finished curve, closures included:
    closures added after the tuning (or left out of its measure) made the mouth faster
    than the person's on an independent track (bench/motion.py). ``contacts``: the frames
    whose lips touch, which make undershoot depend on the time each opening has (see
    ``_shortness``); without them every opening is cut alike."""
    q, rest, step = prof.open_q, prof.rest_open, step_limit(prof, fps)
    pace = _SPEED_TARGET * prof.speed * prof.fps / max(fps, 1.0)  # per frame at ``fps``
    speech = act > 0.5
    ref = score[speech] if speech.sum() >= 5 else score
    # Speech frames take the person's range from their rest posture upwards: the quietest
    # speech must not end up more closed than a pause (that inverts the sound-mouth link);
    # only bilabial closures go below rest, below.
    u_rest = float(np.interp(rest, q, QUANTILES))
    q_speech = np.interp(u_rest + (1 - u_rest) * QUANTILES, QUANTILES, q)
    mapped = _range_map(score, ref, q_speech)
    act_s = _zero_phase_smooth(act, 0.6, 0.25)
    # Pauses relax toward the person's rest posture.
    base = act_s * mapped + (1 - act_s) * rest
    base = _shift_lead(base, _LEAD_FRAMES)
    if base.size < 4:
        return finish(_rate_limit(base, step))

    light = _zero_phase_smooth(base, 0.95, 0.8)
    short = (np.ones(base.size) if contacts is None
             else np.maximum(_shortness(np.asarray(contacts, bool), fps), _UNDERSHOOT_ALL))

    def render(k: float, amp: float = 1.0) -> np.ndarray:
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
        if amp < 1.0:
            out = out - act_s * (1.0 - amp) * short * (out - rest)
        return finish(_rate_limit(out, step))

    def speed_of(y: np.ndarray) -> float:
        m = speech[1:] & speech[:-1]
        d = np.abs(np.diff(y))
        return float(d[m].mean()) if m.sum() >= 3 else float(d.mean())

    lo, hi = 0.0, _MAX_SMOOTHING
    best = render(0.5)
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        best = render(mid)
        if speed_of(best) > pace:
            lo = mid
        else:
            hi = mid
    best = render(hi)  # the lightest smoothing found slow enough (or the heaviest)
    if speed_of(best) <= pace:
        return best
    # Smoothing alone could not slow it enough: the ramps into and out of closures are
    # motion no smoothing removes. A real mouth in fast speech opens less between its
    # closures (undershoot): the openings come down toward rest, as far as needed, the
    # short ones between contacts most (see ``_shortness``); the closures stay whole.
    k = hi
    a_lo, a_hi = (_MIN_AMPLITUDE if contacts is None else _MIN_AMPLITUDE_SHORT), 1.0
    for _ in range(8):
        mid = 0.5 * (a_lo + a_hi)
        if speed_of(render(k, mid)) > pace:
            a_hi = mid
        else:
            a_lo = mid
    return render(k, a_lo)


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
    return np.asarray(vis.bilabial * (gate > 0.2) * _quiet(loudness) > visemes.BILABIAL_CONTACT)


def _quiet(loudness: np.ndarray) -> np.ndarray:
    """How much quieter than the loudest of its syllable each frame is (0..1; 4 dB under
    it reads 0.5)."""
    peak = maximum_filter1d(loudness, 9) if loudness.shape[0] else loudness
    return np.asarray(sig((peak - loudness - 4.0) / 1.5))


def near_closure_frames(vis: FrameVisemes, gate: np.ndarray,
                        loudness: np.ndarray) -> np.ndarray:
    """Frames where the model hears a bilabial less surely than :func:`closure_frames`
    asks (a voice unlike any it was trained on: its posteriors peak at 0.3-0.5 where a
    familiar voice's reach 0.9). The lips come near, as for /f v/, not pressed: a
    near-closure still reads as a /p b m/, and where the model was wrong (a /t/ or /n/,
    whose lips are half shut anyway) it costs little."""
    return np.asarray(vis.bilabial_near * (gate > 0.2) * _quiet(loudness)
                      > visemes.BILABIAL_NEAR)


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
    person's range and speed, with articulation imposed inside the speed tuning: lips
    pressed together for every bilabial however short, held at least 70 ms, its
    neighbours drawn part of the way (``trajectory.articulate``; ramps of at most
    ``closing_step`` per source frame); nearly closed on /f v/; width spread on /i e/ and
    narrowed on rounded sounds, starting before them. ``closure`` marks the frames held
    shut.
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
    c = articulation_cues(ff, vis)
    cm = c.matrix()
    o_score = apply_calibration(profile.open_cal, cm, generic_open(c))
    closed = closure_frames(vis, c.gate, ff.loudness)
    labio = (vis.labiodental * (c.gate > 0.2) > 0.5) & ~closed
    if NEAR_CLOSURES:
        labio |= near_closure_frames(vis, c.gate, ff.loudness) & ~closed
    q = profile.open_q
    span = float(q[95] - q[5])
    lo, hi = float(profile.open_q[0]), float(profile.open_q[-1])
    lo, hi = min(lo, profile.rest_open), max(hi, profile.rest_open)
    held = hold_closures(closed, ff.loudness, min_closure_frames(fps))

    def with_articulation(curve: np.ndarray) -> np.ndarray:
        return articulate(
            np.clip(curve, lo, hi), held, labio & ~held, c.act, fps=fps,
            closed_level=closed_level(profile),
            labio_level=min(float(q[10]), 0.45 * float(q[50])),
            step=step_limit(profile, fps),
            nucleus=vis.post[:, OPEN] + 0.5 * vis.post[:, MID])

    opening = _shape_curve(o_score, c.act, profile, with_articulation, fps,
                           contacts=(held | labio) if SHORT_UNDERSHOOT else None)

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

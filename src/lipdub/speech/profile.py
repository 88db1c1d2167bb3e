"""How one person's mouth moves when they speak, measured on their source frames.

Range (quantiles of opening and width while speaking), rest posture, speed and fastest
real movement, from the identify track's landmarks and (when the video has sound) the
source's own speech: pauses are told apart from speech, and the person's audio-to-mouth
mapping is self-calibrated. The targets (``mouth``) stay inside what this person did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipdub.errors import InputError
from lipdub.faces.geometry import mouth_opening, mouth_width
from lipdub.speech.calibration import Calibration, fit_calibration
from lipdub.speech.cues import articulation_cues, generic_open
from lipdub.speech.features import frame_features
from lipdub.speech.visemes import frame_visemes

QUANTILES = np.linspace(0.0, 1.0, 101)
# A speaking mouth spans at least this much opening (inner-lip gap / inter-ocular distance);
# the bench speakers span 0.12-0.35. Below it the source shows no speech to learn from.
_MIN_SPEAKING_SPAN = 0.06
_GENERIC_SPAN = 0.25
_MIN_SPEED_PER_SPAN = 0.08


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
        c = articulation_cues(ff, frame_visemes(source_audio, sr, fps, n_video, times_ms=times))
        act = c.act[fr]
        if (act > 0.5).sum() >= 20:
            speaking = act > 0.5
        pauses = act < 0.2
        cues_m = c.matrix()
        gen_o = generic_open(c)

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
        open_q=np.quantile(o_sp, QUANTILES),
        width_q=np.quantile(w_sp, QUANTILES),
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
        prof.open_cal = fit_calibration(cues_m, gen_o, full_o, valid, min_agreement=0.2)
        # Width is not calibrated: it follows the visemes (spread, rounded), which a few
        # seconds of one person's speech cannot teach better than they say it.
    return prof


# A dubbed mouth moves at most this share of the person's own 99th-percentile change per
# frame. At the full percentile the curve sat on the limit on up to 7 % of its frames (a
# fast stretch of speech is a run of steps at the limit), and an independent landmark
# model, with its own noise, read most of them as larger than anything the person does
# (bench/motion.py "jumps"); the person's own mouth is there 1 % of the time.
STEP_HEADROOM = 0.8


def closed_level(profile: SpeakerProfile) -> float:
    """The opening of lips pressed together for this person: their own most-closed
    speaking frames when those are closed, else (a mouth never shut in the source) a
    true closure that the renderer has to make. Landmarks put closed lips near 0."""
    return min(float(profile.open_q[1]), 0.25 * float(profile.open_q[50]))


def closing_step(profile: SpeakerProfile) -> float:
    """The largest change per frame (of the profile's ``fps``) into and out of a closure:
    the person's own fastest real movement. A closure approached faster than that (the
    earlier 0.35 of the range per frame) was a jump larger than anything the person does
    on each side of every /p b m/. A floor keeps a closure reachable from a wide vowel in
    a few frames when the measured track is unusually slow."""
    return max(profile.max_step, 0.15 * float(profile.open_q[95] - profile.open_q[5]))


def step_limit(profile: SpeakerProfile, fps: float) -> float:
    """The largest per-frame change a dubbed mouth makes at ``fps``: ``STEP_HEADROOM``
    of :func:`closing_step`, per second rather than per frame of the profile's video."""
    return STEP_HEADROOM * closing_step(profile) * profile.fps / max(fps, 1.0)


def width_range(profile: SpeakerProfile) -> tuple[float, float]:
    """(rounded, spread) width targets: spread at the person's wide end; rounded below
    anything an unrounding speaker shows (the renderer narrows the mouth geometrically
    where its bank has no such shape)."""
    wq = profile.width_q
    w_rest = profile.rest_width
    w_hi = max(float(wq[97]), w_rest)
    w_lo = min(float(wq[3]), w_rest) - 0.35 * max(float(wq[95] - wq[5]), 0.03 * w_rest)
    return w_lo, w_hi

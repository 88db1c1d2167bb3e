"""Mouth targets from speech: closed in silence, open on loud vowels, natural motion,
any language, and self-calibration only when it earns its place."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lipdub.errors import InputError
from lipdub.faces.geometry import mouth_opening, mouth_width
from lipdub.media.audio import decode_audio, to_mono
from lipdub.speech.cues import articulation_cues
from lipdub.speech.features import frame_features, speech_loudness
from lipdub.speech.mouth import (
    MouthTargets,
    SpeakerProfile,
    build_profile,
    closed_level,
    closing_step,
    mouth_targets,
    step_limit,
    width_range,
)
from lipdub.speech.visemes import frame_visemes

MEDIA = Path(os.environ.get("LIPDUB_MEDIA", Path(__file__).resolve().parents[3] / "shared/media"))
SR = 16000
FPS = 25.0
SPEECH = {
    "en": "sadtalker__RD_Radio31_000.wav",
    "zh": "sadtalker__chinese_news.wav",
    "de": "sadtalker__deyu.wav",
    "ja": "sadtalker__japanese.wav",
}


def face(opening: np.ndarray, width: np.ndarray | float = 0.9) -> np.ndarray:
    """Synthetic (N, 68, 2) landmarks with the given inner-lip gap and corner distance,
    in geometry units (inter-ocular distance 40 px)."""
    opening = np.asarray(opening, dtype=np.float64)
    n = opening.shape[0]
    w = np.broadcast_to(np.asarray(width, dtype=np.float64), (n,))
    lm = np.zeros((n, 68, 2))
    lm[:, :, 0] = np.linspace(10, 90, 68)
    lm[:, :, 1] = 60.0
    lm[:, 36:42] = (30.0, 40.0)
    lm[:, 42:48] = (70.0, 40.0)
    lm[:, 48, 0], lm[:, 54, 0] = 50 - 20 * w, 50 + 20 * w
    lm[:, 48, 1] = lm[:, 54, 1] = 80.0
    for k, (up, lo) in enumerate(((61, 67), (62, 66), (63, 65))):
        lm[:, up] = np.stack([np.full(n, 45.0 + 5 * k), 80 - 20 * opening], 1)
        lm[:, lo] = np.stack([np.full(n, 45.0 + 5 * k), 80 + 20 * opening], 1)
    return lm


def typical_profile(seed: int = 0) -> SpeakerProfile:
    """A person whose speaking mouth opens 0.01-0.3 with realistic frame-to-frame motion."""
    rng = np.random.default_rng(seed)
    t = np.arange(300)
    op = 0.12 + 0.09 * np.sin(2 * np.pi * t / 9.0) + 0.03 * rng.standard_normal(300)
    op = np.clip(op, 0.01, 0.3)
    return build_profile(face(op, 0.85 + 0.05 * np.sin(t / 5)), FPS)


def load(name: str, seconds: float, offset_s: float = 0.0) -> np.ndarray:
    path = MEDIA / name
    assert path.is_file(), f"{path} is missing: CI needs ../shared/media beside the repo"
    x = to_mono(decode_audio(path, SR, 1))
    i0 = int(offset_s * SR)
    return x[i0 : i0 + int(seconds * SR)]


def with_pauses(speech: np.ndarray, pause_s: float = 1.0) -> np.ndarray:
    z = np.zeros(int(pause_s * SR), np.float32)
    return np.concatenate([z, speech, z])


def check_natural(t: MouthTargets, prof: SpeakerProfile) -> None:
    for v in (t.open, t.width, t.rounding, t.closure):
        assert np.isfinite(v).all()
    # Inside the person's range, or pressed shut on a bilabial; every step inside the
    # headroom under the person's own fastest movement (a run of steps at the limit
    # itself read as jumps on an independent landmark track).
    lo = min(float(prof.open_q[0]), closed_level(prof))
    assert t.open.min() >= lo - 1e-6 and t.open.max() <= prof.open_q[-1] + 1e-6
    d = np.abs(np.diff(t.open))
    assert d.max() <= step_limit(prof, prof.fps) + 1e-6
    assert step_limit(prof, prof.fps) < closing_step(prof)
    near_closure = (t.closure[1:] + t.closure[:-1]) > 0
    assert (d[~near_closure] <= prof.max_step + 1e-6).mean() > 0.97
    assert t.rounding.min() >= 0 and t.rounding.max() <= 1
    assert t.closure.min() >= 0 and t.closure.max() <= 1


def check_speech(audio: np.ndarray, prof: SpeakerProfile) -> None:
    n = int(audio.size / SR * FPS)
    t = mouth_targets(audio, SR, FPS, n, prof)
    check_natural(t, prof)
    span = prof.open_q[95] - prof.open_q[5]
    # Well inside the pauses: at rest (not pressed shut, not open).
    pause = np.r_[3:20, n - 20 : n - 3]
    assert np.abs(t.open[pause] - prof.rest_open).max() < 0.05 * span
    # The loudest frames are open, well above rest.
    loud = speech_loudness(audio, SR, FPS, n)
    top = np.argsort(loud)[-n // 8 :]
    # (0.35 of the range: the trajectory shaves peaks a mouth could reach only with a
    # jerk, and draws the frames around each closure part of the way down.)
    assert t.open[top].mean() > prof.rest_open + 0.35 * span
    assert np.corrcoef(t.open, loud)[0, 1] > 0.5
    # In step with the sound: best lag (positive = mouth behind) is -1 or 0 frames.
    lags = range(-4, 5)
    rs = [np.corrcoef(np.roll(t.open, -lag)[4:-4], loud[4:-4])[0, 1] for lag in lags]
    assert list(lags)[int(np.argmax(rs))] in (-1, 0)


@pytest.mark.parametrize("lang", sorted(SPEECH))
def test_real_speech_closed_in_pauses_open_on_vowels(lang: str) -> None:
    check_speech(with_pauses(load(SPEECH[lang], 4.0, 1.0)), typical_profile())


def test_french_synthesised_with_espeak(tmp_path: Path) -> None:
    exe = shutil.which("espeak-ng")
    assert exe is not None, "espeak-ng is missing: `make test` installs it"
    wav = tmp_path / "fr.wav"
    text = "Bonjour à tous, nous allons parler du budget de la ville pour l'année prochaine."
    subprocess.run([exe, "-v", "fr", "-s", "150", "-w", str(wav), text], check=True)
    x = to_mono(decode_audio(wav, SR, 1))
    check_speech(with_pauses(x[: 5 * SR]), typical_profile())


def test_singing_does_not_break_it() -> None:
    prof = typical_profile(1)
    x = load("infinitetalk__1.wav", 6.0)
    n = int(6.0 * FPS)
    t = mouth_targets(x, SR, FPS, n, prof)
    check_natural(t, prof)
    assert np.corrcoef(t.open, speech_loudness(x, SR, FPS, n))[0, 1] > 0.3


def test_noise_and_room_tone_leave_the_mouth_at_rest() -> None:
    prof = typical_profile()
    rng = np.random.default_rng(5)
    hiss = (0.05 * rng.standard_normal(4 * SR)).astype(np.float32)
    # Loud, modulated noise: level statistics alone would call this speech.
    hiss *= (1 + np.sin(2 * np.pi * 3 * np.arange(hiss.size) / SR)).astype(np.float32)
    t = mouth_targets(hiss, SR, FPS, 100, prof)
    np.testing.assert_allclose(t.open, prof.rest_open, atol=1e-6)
    ambient = MEDIA / "facenetpytorch__video.mp4"  # street sound, no speech
    if ambient.is_file():
        from lipdub.media.audio import read_video_audio

        a = read_video_audio(ambient, SR, 1)
        assert a is not None
        n = int(a.shape[0] / SR * FPS)
        t = mouth_targets(to_mono(a), SR, FPS, n, prof)
        assert np.abs(t.open - prof.rest_open).max() < 0.05 * (prof.open_q[95] - prof.open_q[5])


def test_no_closed_to_wide_open_in_one_frame() -> None:
    prof = typical_profile()
    rng = np.random.default_rng(3)
    burst = np.zeros(2 * SR, np.float32)
    # An abrupt, very loud vowel-like onset at exactly 1.0 s.
    t = np.arange(SR) / SR
    burst[SR:] = 0.8 * np.sign(np.sin(2 * np.pi * 150 * t)) + 0.05 * rng.standard_normal(SR)
    out = mouth_targets(burst, SR, FPS, 50, prof)
    d = np.diff(out.open)
    assert np.abs(d).max() <= prof.max_step + 1e-6  # float32 output
    assert prof.max_step <= 0.5 * (prof.open_q[95] - prof.open_q[5]) + 1e-9
    # The rise is spread over several frames and is under way on the first sounding frame.
    rising = np.flatnonzero(d > 0.1 * prof.max_step)
    assert rising.size >= 2
    assert out.open[:24].min() >= prof.rest_open - 1e-6  # no press before the onset
    # Frame 25 is the first with sound; the mouth forms half a frame ahead of it, so the
    # rise is under way by then, or, where the model hears a lip contact at the onset (a
    # buzz's abrupt start reads as a /b/ or a /v/), on the frame after the contact.
    vis = frame_visemes(burst, SR, FPS, 50)
    contact = np.flatnonzero(np.maximum(vis.bilabial, vis.labiodental)[24:28] > 0.5)
    first = 24 + (int(contact.max()) + 1 if contact.size else 0)
    assert out.open[first : first + 2].max() > prof.rest_open + 0.1 * prof.max_step
    # A buzz is not speech: the viseme model may hear its first frames as a /v/.
    assert out.open[27] > prof.rest_open + 0.5 * prof.max_step


def test_silence_gives_rest_everywhere() -> None:
    prof = typical_profile()
    t = mouth_targets(np.zeros(3 * SR, np.float32), SR, FPS, 75, prof)
    np.testing.assert_allclose(t.open, prof.rest_open, atol=1e-9)
    np.testing.assert_allclose(t.width, prof.rest_width, atol=1e-6)
    assert mouth_targets(np.zeros(0, np.float32), SR, FPS, 0, prof).open.size == 0


def test_profile_measures_the_person() -> None:
    op = np.r_[np.full(20, 0.03), np.tile([0.1, 0.2, 0.3, 0.2], 20), np.full(20, 0.03)]
    prof = build_profile(face(op, 0.8), FPS)
    assert prof.open_q[0] == pytest.approx(0.03) and prof.open_q[-1] == pytest.approx(0.3)
    assert prof.width_q[50] == pytest.approx(0.8)
    assert prof.speed == pytest.approx(np.abs(np.diff(op)).mean())
    assert mouth_opening(face(op[:3]))[2] == pytest.approx(op[2])
    assert mouth_width(face(op[:3], 0.7))[0] == pytest.approx(0.7)
    with pytest.raises(InputError, match="shaped"):
        build_profile(np.zeros((5, 20, 2)), FPS)
    with pytest.raises(InputError, match="at least 10"):
        build_profile(face(op[:5]), FPS)


def source_with_mouth(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Real English audio and a synthetic mouth that either follows an audio cue the
    generic mapping does not use that way, or ignores the audio completely."""
    x = load(SPEECH["en"], 8.0)
    n = int(8.0 * FPS)
    c = articulation_cues(frame_features(x, SR, FPS, n))
    rng = np.random.default_rng(7)
    if kind == "follows":
        # This person opens on fricatives and rounded vowels, nearly shut otherwise.
        drive = 0.7 * c.fric + 0.5 * c.rounding + 0.05 * rng.standard_normal(n)
    else:
        drive = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
    drive = (drive - drive.min()) / np.ptp(drive)
    return x, 0.02 + 0.25 * drive


def test_calibration_used_when_it_validates_better() -> None:
    x, op = source_with_mouth("follows")
    prof = build_profile(face(op), FPS, x, SR)
    assert prof.open_cal is not None
    assert prof.open_cal.weight > 0
    assert prof.open_cal.r_blend > prof.open_cal.r_generic + 0.08
    plain = build_profile(face(op), FPS, x, SR, calibrate=False)
    a = mouth_targets(x, SR, FPS, op.size, prof).open
    b = mouth_targets(x, SR, FPS, op.size, plain).open
    assert np.corrcoef(a, op)[0, 1] > np.corrcoef(b, op)[0, 1]


def test_calibration_rejected_when_it_does_not() -> None:
    x, op = source_with_mouth("random")
    prof = build_profile(face(op), FPS, x, SR)
    assert prof.open_cal is None or prof.open_cal.weight == 0


def test_frame_times_match_the_constant_rate_grid() -> None:
    prof = typical_profile()
    x = with_pauses(load(SPEECH["de"], 3.0, 1.0), 0.5)
    n = int(x.size / SR * FPS)
    grid = mouth_targets(x, SR, FPS, n, prof)
    timed = mouth_targets(x, SR, FPS, n, prof, frame_times_ms=np.arange(n) * 1000 / FPS)
    np.testing.assert_allclose(timed.open, grid.open, atol=1e-6)
    with pytest.raises(InputError, match="one time per output frame"):
        mouth_targets(x, SR, FPS, n, prof, frame_times_ms=np.zeros(3))


def test_width_stays_in_the_persons_range_and_rests_in_pauses() -> None:
    prof = typical_profile()
    x = with_pauses(load(SPEECH["zh"], 4.0, 1.0))
    n = int(x.size / SR * FPS)
    t = mouth_targets(x, SR, FPS, n, prof)
    w_lo, w_hi = width_range(prof)
    assert w_lo - 1e-6 <= t.width.min() and t.width.max() <= w_hi + 1e-6
    np.testing.assert_allclose(t.width[3:15], prof.rest_width, atol=1e-3)
    assert np.abs(np.diff(t.width)).max() <= 2 * prof.width_step + 1e-6
    assert np.ptp(t.width[30:-30]) > 0.2 * (prof.width_q[95] - prof.width_q[5])


def test_a_mouth_never_seen_speaking_gets_a_typical_range_from_its_rest() -> None:
    still = build_profile(face(np.full(50, 0.05)), FPS)
    x = with_pauses(load(SPEECH["en"], 2.0, 1.0), 0.5)
    t = mouth_targets(x, SR, FPS, int(x.size / SR * FPS), still)
    assert np.isfinite(t.open).all() and np.isfinite(t.width).all()
    assert t.open[:5] == pytest.approx(0.05, abs=0.01)  # rests where the face rests
    assert t.open.max() > 0.15  # and opens like a speaker's mouth when the speech is loud

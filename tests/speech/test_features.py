"""speech_loudness: the one definition of per-frame speech loudness the benchmark uses."""

from __future__ import annotations

import numpy as np
import pytest

from lipdub.speech.features import SILENCE_DB, frame_features, speech_loudness


def tone(sr: int, seconds: float, freq: float, amp: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_in_band_tone_reads_its_rms_in_db() -> None:
    sr, fps = 16000, 25.0
    x = tone(sr, 2.0, 1000.0, 0.5)
    db = speech_loudness(x, sr, fps, 50)
    assert db.shape == (50,)
    expected = 20 * np.log10(0.5 / np.sqrt(2))
    np.testing.assert_allclose(db[2:-2], expected, atol=0.3)


def test_out_of_band_energy_is_ignored() -> None:
    sr, fps = 48000, 30.0
    low = speech_loudness(tone(sr, 1.0, 80.0, 0.5), sr, fps, 30)
    high = speech_loudness(tone(sr, 1.0, 8000.0, 0.5), sr, fps, 30)
    mid = speech_loudness(tone(sr, 1.0, 1000.0, 0.5), sr, fps, 30)
    assert (mid[3:-3] - low[3:-3]).min() > 20
    assert (mid[3:-3] - high[3:-3]).min() > 20


def test_silence_outside_and_timing() -> None:
    sr, fps = 16000, 25.0
    x = np.zeros(sr * 2, np.float32)
    x[sr : sr + sr // 2] = tone(sr, 0.5, 500.0, 0.3)  # 1.0-1.5 s
    db = speech_loudness(x, sr, fps, 60)
    assert db[0] == SILENCE_DB and db[10] == SILENCE_DB
    assert db[26:36].min() > -20  # frames 26-36 sit at 1.04-1.44 s
    assert (db[55:] == SILENCE_DB).all()  # past the end of the audio
    # start_ms moves frame 0 along the audio's timeline.
    shifted = speech_loudness(x, sr, fps, 10, start_ms=1040.0)
    np.testing.assert_allclose(shifted, db[26:36], atol=1e-6)
    # Stereo is averaged, not rejected.
    np.testing.assert_allclose(speech_loudness(np.stack([x, x], 1), sr, fps, 60), db, atol=1e-6)


def test_frame_features_shapes_are_finite() -> None:
    sr, fps = 22050, 25.0
    rng = np.random.default_rng(1)
    x = np.concatenate([np.zeros(sr // 2), 0.1 * rng.standard_normal(sr)]).astype(np.float32)
    ff = frame_features(x, sr, fps, 40)
    assert ff.n == 40 and ff.bands.shape[0] == 40
    for v in (ff.loudness, ff.bands, ff.centroid, ff.flatness, ff.voicing, ff.dip):
        assert np.isfinite(v).all()
    assert ff.flatness[20:35].mean() > 0.5  # white noise is flat
    assert ff.voicing[20:35].mean() < 0.5  # and unvoiced


@pytest.mark.parametrize("n", [0, 1])
def test_degenerate_sizes(n: int) -> None:
    assert speech_loudness(np.zeros(n, np.float32), 16000, 25.0, 3).tolist() == [SILENCE_DB] * 3

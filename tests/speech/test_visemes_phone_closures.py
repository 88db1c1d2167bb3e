"""The phone times the viseme model is trained on (tools/phonetimed.py ``with_closures``):
espeak-ng reports a voiceless stop from its release, and leaves the silent closure before
it at the end of the phone before; the lips are shut through that silence, and Festival
and flite count it as the stop's, so the training labels give it to the stop.

Named to run after test_trajectory.py, whose pace bounds move with the voices espeak-ng
spoke before in the same process (test_visemes_normalisation.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from phonetimed import synth, with_closures  # noqa: E402


def level_db(audio: np.ndarray, sr: int, a: float, b: float) -> float:
    x = audio[int(a * sr) : int(b * sr)].astype(np.float64)
    return float(10 * np.log10(np.mean(x**2) + 1e-12))


def test_a_stops_silent_closure_is_the_stops() -> None:
    audio, sr, phones = synth("apa, una capa opaca", "es")
    peak = max(level_db(audio, sr, t / 100, (t + 1) / 100) for t in range(audio.size * 100 // sr))
    fixed = with_closures(audio, sr, phones)
    stops = [i for i, (_, _, p) in enumerate(phones) if p in ("p", "k")]
    assert len(stops) >= 4
    moved = 0
    for i in stops:
        a, b, _ = phones[i]
        a2, b2, _ = fixed[i]
        assert b2 == b and a2 <= a
        # espeak's own label: the 10 ms before the stop are silent (its closure).
        before_silent = level_db(audio, sr, a - 0.01, a) < peak - 40
        if before_silent:
            moved += 1
            assert a - a2 >= 0.015  # the closure is now the stop's
            assert level_db(audio, sr, a2, a2 + 0.01) < peak - 30  # and it is silent
            if i > 0 and fixed[i - 1][1] > a2 - 1e-6 and phones[i - 1][1] >= a - 1e-3:
                assert fixed[i - 1][1] == a2  # the vowel before gives it up
    assert moved >= 3  # the case occurs: espeak leaves most closures to the phone before
    # Phones stay in order and keep a length.
    assert all(b > a for a, b, _ in fixed)
    assert all(fixed[k][1] <= fixed[k + 1][0] + 1e-9 for k in range(len(fixed) - 1))


def test_phones_without_stops_are_untouched() -> None:
    audio, sr, phones = synth("mama mia, we love him", "en-us")
    assert with_closures(audio, sr, phones) == phones

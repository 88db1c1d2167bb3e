"""The viseme features' per-recording normalisation (speech/visemes.py ``_normalised``):
a lone word is not blown up, and a long recording reads exactly as the model was trained
to read it.

Named to run after test_trajectory.py: espeak-ng, in one process, speaks a little
differently after each voice it spoke before, and that file's pace bounds are tight (run
before it, the voices here moved its German speech enough to fail it)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lipdub.speech import visemes as V

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from phonetimed import synth  # noqa: E402


def test_a_lone_word_is_not_blown_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """One word spreads much less per band over its louder frames than a sentence:
    divided by its own spread, its features came out over 1.3 times a sentence's (median
    size on the speech frames). With the floor they stay in a sentence's range."""
    def size(audio: np.ndarray, sr: int) -> float:
        """Median |feature| over the speech frames (pauses are clipped at the ends)."""
        z = V._normalised(V.to_16k(audio, sr))
        return float(np.median(np.abs(z[z[:, V.N_MELS] > -1.5, : V.N_MELS])))

    word, sr, _ = synth("Papa", "de")
    sentence, sr2, _ = synth("Mein Vater baut ein blaues Boot, und wir essen Pommes.", "de")
    usual = size(sentence, sr2)
    floored = size(word, sr)
    monkeypatch.setattr(V, "SD_FLOOR", 0.0)
    raw = size(word, sr)
    assert raw > 1.3 * usual, (raw, usual)  # the case occurs
    assert floored < 1.1 * usual, (floored, usual)


def test_a_long_recording_reads_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sixteen seconds of espeak-ng: its lowest and highest mel bands spread less than the
    floor over its louder frames. The model was trained to read such bands divided by
    their own spread (applied to every recording, the floor moved the benchmarks' dubs),
    so on a recording of several seconds the floor must not apply: the posteriors are
    exactly those without it."""
    from eval_visemes import EN

    audio, sr, _ = synth(" ".join(EN[6:12]), "en-us+f3")
    x16 = V.to_16k(audio, sr)
    lm = V.log_mel(x16)
    e = lm[:, V.N_MELS]
    ref = lm[e > e.max() - 23.0]
    loud = ref[ref[:, V.N_MELS] >= np.median(ref[:, V.N_MELS])]
    assert loud.shape[0] >= V.SHORT_LOUD_FRAMES
    assert loud[:, : V.N_MELS].std(0).min() < V.SD_FLOOR  # the floor would bind
    with_floor = V.viseme_posteriors(x16, V.SR)
    monkeypatch.setattr(V, "SD_FLOOR", 0.0)
    np.testing.assert_array_equal(V.viseme_posteriors(x16, V.SR), with_floor)

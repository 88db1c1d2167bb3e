"""Articulation: the targets say the words, in languages the viseme model never heard.

Phoneme-timed speech comes from espeak-ng's library (``tools/phonetimed.py``, the same
source as bench/articulation.py); German, Spanish and Vietnamese are held out of the
model's training. Real recordings, which have no phoneme times, are held to what speech
always shows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lipdub.speech.cues import articulation_cues
from lipdub.speech.features import frame_features, speech_loudness
from lipdub.speech.mouth import closure_frames, mouth_targets
from lipdub.speech.visemes import (
    BILABIAL,
    BILABIAL_CONTACT,
    CLASSES,
    frame_visemes,
    smoothed,
    viseme_posteriors,
)
from tests.speech.test_mouth import FPS, SPEECH, SR, load, typical_profile, with_pauses

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from phonetimed import synth  # noqa: E402

SENTENCES = {
    "de": ("de", "Mama bringt Butter und Obst. Die Bienen summen im blauen Baum."),
    "es": ("es", "Mi mamá bebe un poco de agua. Pablo compra pan bueno por la mañana."),
    "vi": ("vi", "Bà mua một bó hoa. Mẹ bảo bé uống sữa."),
    "en": ("en-us+m3", "Bob bought a blue moon boot. Peter met my mum by the map."),
}
_BILABIAL = ("p", "b", "m")
_SPREAD = ("i", "e", "ɪ")
_ROUND = ("u", "o", "ʊ", "y", "ø", "w")


def frames_of_phone(a: float, b: float, n: int) -> np.ndarray:
    k0 = int(np.floor(a * FPS - 0.5))
    k1 = int(np.ceil(b * FPS + 0.5))
    return np.arange(max(k0, 0), min(k1, n))


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_bilabials_close_and_rounding_narrows(lang: str) -> None:
    voice, text = SENTENCES[lang]
    audio, sr, phones = synth(text, voice)
    audio = np.concatenate([np.zeros(sr // 2, np.float32), audio, np.zeros(sr // 2,
                                                                          np.float32)])
    phones = [(a + 0.5, b + 0.5, p) for a, b, p in phones]
    prof = typical_profile()
    n = int(audio.size / sr * FPS)
    t = mouth_targets(audio, sr, FPS, n, prof)
    half_median = 0.5 * float(prof.open_q[50])
    bil = [p for p in phones if p[2][0] in _BILABIAL]
    assert len(bil) >= 4
    closed = [t.open[frames_of_phone(a, b, n)].min() < half_median for a, b, _ in bil]
    assert np.mean(closed) >= 0.85, f"{sum(closed)}/{len(closed)} bilabials closed"
    vowels_open = [p for p in phones if p[2][0] in ("a", "ɐ", "ɑ")]
    # Every open vowel opens the mouth; one squeezed into a single frame between two
    # closures ("mamá" said fast) opens part of the way, as a real jaw does in 40 ms.
    for a, b, _ in vowels_open:
        peak = t.open[frames_of_phone(a, b, n)].max()
        assert peak > (half_median if b - a >= 0.06 else 0.6 * half_median), (a, b, peak)
    spread = np.concatenate([frames_of_phone(a, b, n) for a, b, p in phones
                             if p[0] in _SPREAD] or [np.zeros(0, int)])
    rounded = np.concatenate([frames_of_phone(a, b, n) for a, b, p in phones
                              if p[0] in _ROUND] or [np.zeros(0, int)])
    if spread.size and rounded.size:
        assert np.median(t.width[spread]) > 1.04 * np.median(t.width[rounded])


def test_posteriors_are_probabilities_and_silence_is_silence() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(8000, np.float32),
                        0.1 * rng.standard_normal(8000).astype(np.float32)])
    p = viseme_posteriors(x, 16000)
    assert p.shape[1] == len(CLASSES)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert (p[5:40].argmax(1) == CLASSES.index("sil")).all()
    assert viseme_posteriors(np.zeros(0, np.float32), 16000).shape == (1, len(CLASSES))


def test_short_stop_still_closes_its_frame() -> None:
    """A bilabial stop shorter than a frame is not averaged away: every stop the model
    hears (the 30 ms mean of its posterior over the contact threshold) keeps that
    strength on a frame of its own, though a frame's mean posterior over 40 ms may fall
    under it."""
    audio, sr, phones = synth("apa aba apa, papa", "es")
    p30 = smoothed(viseme_posteriors(audio, sr)[:, BILABIAL])
    vis = frame_visemes(audio, sr, FPS, int(audio.size / sr * FPS))
    stops = [(a, b) for a, b, p in phones if p in ("p", "b")]
    heard = [(a, b) for a, b in stops
             if p30[int(a * 100) : int(b * 100) + 1].max() > BILABIAL_CONTACT + 0.05]
    assert len(heard) >= 2, (len(heard), len(stops))
    averaged_away = 0
    for a, b in heard:
        k = frames_of_phone(a, b, vis.bilabial.size)
        assert vis.bilabial[k].max() > BILABIAL_CONTACT
        assert vis.post[k, BILABIAL].max() <= vis.bilabial[k].max() + 1e-6
        averaged_away += vis.post[k, BILABIAL].max() < BILABIAL_CONTACT
    assert averaged_away >= 1  # the case this test is about occurs


@pytest.mark.parametrize("lang", sorted(SPEECH))
def test_real_recordings_close_at_a_speech_like_rate(lang: str) -> None:
    """Real recordings (no phoneme times exist for them): closures come at the rate
    bilabials occur in speech (every language has some, none has them every syllable),
    in the quieter parts of syllables, and the opening still follows the voice."""
    x = with_pauses(load(SPEECH[lang], 6.0, 0.5), 0.5)
    n = int(x.size / SR * FPS)
    vis = frame_visemes(x, SR, FPS, n)
    ff = frame_features(x, SR, FPS, n)
    c = articulation_cues(ff, vis)
    closed = closure_frames(vis, c.gate, ff.loudness)
    speech_s = float((c.act > 0.5).sum()) / FPS
    runs = int(np.sum(np.diff(np.r_[0, closed.astype(int)]) == 1))
    assert 0.4 <= runs / speech_s <= 4.0, (runs, speech_s)
    speaking = c.act > 0.5
    assert np.median(ff.loudness[closed]) < np.median(ff.loudness[speaking]) - 3.0
    t = mouth_targets(x, SR, FPS, n, typical_profile())
    assert np.corrcoef(t.open, speech_loudness(x, SR, FPS, n))[0, 1] > 0.4


FLITE_TEXT = ("Maybe the baby will bump the bowl of plums. Bob moved a few boxes up the path. "
              "My mother bought two warm rolls for Paul.")


def test_another_synthesizer_closes_too(tmp_path: Path) -> None:
    """A customer dubs with a voice actor or a neural voice, never with espeak: the lips
    close on flite's /p b m/ as on espeak's (the model once closed 57 % of them with the
    voice awb). flite's -psdur gives every phone's end time."""
    from othertts import flite_synth

    audio, sr, phones = flite_synth(FLITE_TEXT, "awb")
    pad = np.zeros(sr // 2, np.float32)
    audio = np.concatenate([pad, audio, pad])
    phones = [(a + 0.5, b + 0.5, p) for a, b, p in phones]
    prof = typical_profile()
    n = int(audio.size / sr * FPS)
    t = mouth_targets(audio, sr, FPS, n, prof)
    half_median = 0.5 * float(prof.open_q[50])
    bil = [(a, b) for a, b, p in phones if p in _BILABIAL]
    assert len(bil) >= 15
    closed = [t.open[frames_of_phone(a, b, n)].min() < half_median for a, b in bil]
    assert np.mean(closed) >= 0.85, f"{sum(closed)}/{len(closed)} bilabials closed"


def test_a_voice_heard_less_surely_still_brings_the_lips_near(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A voice unlike any the model was trained on gets bilabial posteriors that peak at
    0.3-0.5 instead of 0.9 (issue 20: held-out synthesizers). Played here by espeak's
    speech with the model's bilabial posterior scaled down: the lips still come near
    (under half the person's median opening) on its /p b m/, while its open vowels
    stay open; with near-closures switched off, some of them are lost (the stops whose
    own silence does not bring the curve down)."""
    from lipdub.speech import mouth
    from lipdub.speech.mouth import SpeechAnalysis
    from lipdub.speech.visemes import visemes_at_frames

    audio, sr, phones = synth("Bob bought a blue moon boot. Peter met my mum by the map. "
                              "A happy puppy bumped the lamp.", "en-us+m3")
    pad = np.zeros(sr // 2, np.float32)
    audio = np.concatenate([pad, audio, pad])
    phones = [(a + 0.5, b + 0.5, p) for a, b, p in phones]
    n = int(audio.size / sr * FPS)
    p10 = viseme_posteriors(audio, sr)
    weak = p10.copy()
    weak[:, BILABIAL] *= 0.45  # peaks of ~0.9 now read ~0.4: under the contact threshold
    ff = frame_features(audio, sr, FPS, n)
    analysis = SpeechAnalysis(ff, visemes_at_frames(weak, FPS, n))
    prof = typical_profile()
    half_median = 0.5 * float(prof.open_q[50])
    bil = [(a, b) for a, b, p in phones if p.startswith(_BILABIAL)]
    opens = [(a, b) for a, b, p in phones if p in ("a", "aɪ", "aʊ", "ɑː", "æ")]
    assert len(bil) >= 15 and len(opens) >= 3

    def shut(t: np.ndarray, spans: list[tuple[float, float]]) -> float:
        return float(np.mean([t[frames_of_phone(a, b, n)].min() < half_median
                              for a, b in spans]))

    t = mouth_targets(audio, sr, FPS, n, prof, analysis=analysis)
    assert shut(t.open, bil) >= 0.95, shut(t.open, bil)
    assert not t.closure.any() or t.closure.mean() < 0.05  # near, not pressed
    assert max(t.open[frames_of_phone(a, b, n)].max() for a, b in opens) > 2 * half_median
    monkeypatch.setattr(mouth, "NEAR_CLOSURES", False)
    off = mouth_targets(audio, sr, FPS, n, prof, analysis=analysis)
    assert shut(off.open, bil) <= shut(t.open, bil) - 0.1

"""The phone labels of the training corpus's other synthesizers read as the IPA the viseme
classes are built on (tools/othertts.to_ipa): a wrong vowel there teaches the model a
wrong mouth for every utterance of that voice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from lipdub.speech import visemes as V  # noqa: E402
from othertts import to_ipa  # noqa: E402
from train_visemes import viseme_of  # noqa: E402


@pytest.mark.parametrize(("label", "ipa"), [
    ("a", "ə"),     # Hindi's short a is a schwa, not the open a of "aa"
    ("aa", "a"),
    ("ay", "ɛ"),    # ऐ: one long vowel, not English's diphthong
    ("aw", "ɔ"),    # औ: rounded
    ("eh", "e"),    # ए: spread, as espeak's Hindi labels it
    ("ee", "æ"),    # chandra-E
    ("j", "dʒ"),    # ज: an affricate, not the glide (a spread mouth)
    ("@", "ə"),     # a vowel, not an unknown consonant
    ("uw", "u"),
    ("p", "p"), ("bh", "b"), ("m", "m"), ("f", "f"),
])
def test_hindi_labels(label: str, ipa: str) -> None:
    assert to_ipa(label, "hindi") == ipa


def test_hindi_classes_the_renderer_cares_about() -> None:
    assert viseme_of(to_ipa("bh", "hindi") or "") == [V.BILABIAL]
    assert viseme_of(to_ipa("aw", "hindi") or "") == [V.ROUND]
    assert viseme_of(to_ipa("aa", "hindi") or "") == [V.OPEN]
    assert to_ipa("pau", "hindi") is None
    assert V.SPREAD not in viseme_of(to_ipa("j", "hindi") or "")
    assert viseme_of(to_ipa("eh", "hindi") or "") == [V.SPREAD]


def test_other_sets_unchanged_by_the_hindi_table() -> None:
    assert to_ipa("ay", "cmu") == "aɪ"
    assert to_ipa("A", "sampa") == "ɑ"
    assert to_ipa("@", "sampa-fi") == "æ"
    assert to_ipa("AA", "sampa") == "a"  # SAMPA's letters read case-blind when unknown

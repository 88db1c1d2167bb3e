"""Phone-timed speech from two more synthesizers: Festival and flite.

    from othertts import festival_batch, flite_synth
    audio, sr, phones = flite_synth("Mama bought butter.", voice="rms")
    for audio, sr, phones in festival_batch(["Il bambino mangia."], "lp_diphone"): ...
    # phones: [(start_s, end_s, ipa), ...], labels mapped to IPA so that the viseme
    # labelling of tools/train_visemes.py reads every synthesizer alike

Why: a viseme model trained on one synthesizer learns that synthesizer's sound of a
closure, not the closure (issue 20: 95 % of espeak's /p b m/ but 66 % of other
synthesizers'). Festival (diphone, cluster-unit and HTS voices in several languages) and
flite (CMU clustergen voices) make speech in quite other ways, and both say when each
phone ends: Festival's ``utt.save.segs``, flite's ``-psdur``.

The voices "kal" and "slt" (Festival's kallpc16k and us-slt-hts, flite's kal, kal16 and
slt) are never used here: independent checks measure lipdub on them (``FORBIDDEN``).

Phone sets differ by voice: the CMU/radio set for English (``aa``, ``iy``, ``uw`` ...)
and SAMPA-like sets for the others (``a``, ``E``, ``o:`` ...); ``to_ipa`` maps both.
Offline only (training and benchmarks); the lipdub package never imports it.
"""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

FORBIDDEN = ("kal", "kal16", "slt", "kal_diphone", "kallpc16k", "cmu_us_slt_arctic_hts",
             "us_slt_hts", "cmu_us_kal")
FLITE_VOICES = ("awb", "rms")
# Festival voice -> (language, the text encoding its front end reads). Czech reads
# ISO-8859-2 and Finnish Latin-1: fed UTF-8, both spell out "unknown" for every accent.
FESTIVAL_VOICES: dict[str, tuple[str, str]] = {
    "ked_diphone": ("en", "latin-1"),
    "lp_diphone": ("it", "latin-1"),
    "pc_diphone": ("it", "latin-1"),
    "czech_dita": ("cs", "iso-8859-2"),
    "czech_machac": ("cs", "iso-8859-2"),
    "czech_ph": ("cs", "iso-8859-2"),
    "suo_fi_lj_diphone": ("fi", "latin-1"),
    "hy_fi_mv_diphone": ("fi", "latin-1"),
    "upc_ca_ona_hts": ("ca", "latin-1"),
    "msu_ru_nsh_clunits": ("ru", "utf-8"),
}
# Voices the shipped model never heard, for corpora that opt in (train_visemes.py
# --extra-voices): Festival's Czech child voice and its Hindi diphone voice (Debian's
# festvox-czech-krb and festvox-hi-nsk).
EXTRA_FESTIVAL_VOICES: dict[str, tuple[str, str]] = {
    "czech_krb": ("cs", "iso-8859-2"),
    "hindi_NSK_diphone": ("hi", "utf-8"),
}

# CMU / radio phone set (Festival's English voices, flite) and the SAMPA-like letters of
# the other voices, to IPA. Consonants that are neither labial nor rounded need no exact
# symbol: any non-vowel letter labels "other consonant".
_CMU = {
    "aa": "ɑ", "ae": "æ", "ah": "ʌ", "ao": "ɔ", "aw": "aʊ", "ay": "aɪ", "ax": "ə",
    "axr": "ɚ", "eh": "ɛ", "er": "ɝ", "ey": "eɪ", "ih": "ɪ", "ix": "ɨ", "iy": "i",
    "ow": "oʊ", "oy": "ɔɪ", "uh": "ʊ", "uw": "u", "w": "w", "hh": "h", "ch": "tʃ",
    "jh": "dʒ", "sh": "ʃ", "zh": "ʒ", "th": "θ", "dh": "ð", "ng": "ŋ", "y": "j",
    "dx": "ɾ", "el": "l", "em": "m", "en": "n",
}
_SAMPA = {
    "a": "a", "aa": "a", "A": "ɑ", "e": "e", "ee": "e", "E": "ɛ", "i": "i", "ii": "i",
    "I": "ɪ", "o": "o", "oo": "o", "O": "ɔ", "u": "u", "uu": "u", "U": "ʊ", "y": "y",
    "Y": "ʏ", "yy": "ɨ", "@": "ə", "ax": "ə", "{": "æ", "2": "ø", "9": "œ", "ae": "æ",
    "oe": "ø", "ue": "y", "w": "w", "j": "j", "ch": "x",
}
# The Hindi voice's own set (festival's hindi_scm/hindi_phones.scm and its lexicon): short
# "a" is a schwa; "eh" is ए (/eː/) and "ee" chandra-E ॅ (/æ/); "ay" and "aw" are the long
# monophthongs of ऐ and औ; "j" is the affricate of ज (IPA "j" would be the glide, a spread
# mouth); the rest reads as CMU.
_HINDI = {**_CMU, "a": "ə", "aa": "a", "eh": "e", "ee": "æ", "ay": "ɛ", "aw": "ɔ",
          "oh": "o", "oo": "o", "@": "ə", "j": "dʒ"}
_SILENT = {"pau", "#", "_", "sil", "h#", "brth", "ssil"}


def to_ipa(label: str, phoneset: str) -> str | None:
    """IPA for one synthesizer phone label; None for a pause. ``phoneset`` is "cmu",
    "sampa", "sampa-fi" (suopuhe writes the Finnish front vowel ä as "@") or "hindi"."""
    if phoneset == "sampa-fi" and label.strip().startswith("@"):
        return "æ"
    base = re.sub(r"[0-9*~:]+$", "", label.strip())  # stress digits, length, variants
    base = base.rstrip(":")
    if not base or base in _SILENT:
        return None
    table = {"cmu": _CMU, "hindi": _HINDI}.get(phoneset, _SAMPA)
    if base in table:
        return table[base]
    if phoneset not in ("cmu", "hindi") and base.lower() in table:
        return table[base.lower()]
    # Geminates and palatalised forms ("m:", "n*", "bb"): their first letter says it.
    return base[0].lower() if base[0].isalpha() else "t"


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        sr = w.getframerate()
        raw = w.readframes(w.getnframes())
        ch = w.getnchannels()
    x = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
    if ch > 1:
        x = x.reshape(-1, ch).mean(1)
    return x, sr


def _phones_from_ends(ends: list[tuple[float, str]], phoneset: str,
                      total: float) -> list[tuple[float, float, str]]:
    out: list[tuple[float, float, str]] = []
    prev = 0.0
    for end, lab in ends:
        end = min(end, total)
        ipa = to_ipa(lab, phoneset)
        if ipa is not None and end > prev:
            out.append((prev, end, ipa))
        prev = max(prev, end)
    return out


def flite_synth(text: str, voice: str = "rms", stretch: float = 1.0,
                f0_mean: float | None = None) -> tuple[np.ndarray, int, list]:
    """Speak ``text`` with flite; ``stretch`` > 1 is slower speech."""
    if voice in FORBIDDEN:
        raise ValueError(f"voice {voice!r} is kept for independent checks")
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "o.wav"
        cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}"]
        if f0_mean is not None:
            cmd += ["--setf", f"int_f0_target_mean={f0_mean:.1f}"]
        out = subprocess.run(cmd + ["-psdur", "-t", text, "-o", str(wav)], check=True,
                             capture_output=True, text=True, timeout=120).stdout
        x, sr = _read_wav(wav.read_bytes())
    ends = []
    for tok in out.split():
        lab, _, t = tok.rpartition(":")
        try:
            ends.append((float(t), lab))
        except ValueError:
            continue
    return x, sr, _phones_from_ends(ends, "cmu", x.size / sr)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", " ").replace('"', " ") + '"'


def festival_batch(texts: list[str], voice: str, stretch: float = 1.0,
                   ) -> list[tuple[np.ndarray, int, list]]:
    """Speak each of ``texts`` with one Festival process (its start-up is most of the cost
    of a short sentence). Utterances Festival cannot speak come back empty."""
    if voice in FORBIDDEN:
        raise ValueError(f"voice {voice!r} is kept for independent checks")
    lang, enc = {**FESTIVAL_VOICES, **EXTRA_FESTIVAL_VOICES}[voice]
    phoneset = {"en": "cmu", "fi": "sampa-fi", "hi": "hindi"}.get(lang, "sampa")
    results: list[tuple[np.ndarray, int, list]] = []
    with tempfile.TemporaryDirectory() as d:
        lines = [f"(voice_{voice})", f"(Parameter.set 'Duration_Stretch {stretch:.3f})"]
        for i, t in enumerate(texts):
            lines.append(f"(set! u (Utterance Text {_scheme_string(t)}))")
            lines.append("(utt.synth u)")
            lines.append(f'(utt.save.wave u "{d}/{i}.wav" \'riff)')
            lines.append(f'(utt.save.segs u "{d}/{i}.segs")')
        script = Path(d) / "run.scm"
        script.write_bytes("\n".join(lines).encode(enc, "replace"))
        subprocess.run(["festival", "-b", str(script)], capture_output=True,
                       timeout=60 + 10 * len(texts), check=False)
        for i in range(len(texts)):
            w, s = Path(d) / f"{i}.wav", Path(d) / f"{i}.segs"
            if not (w.exists() and s.exists()):
                results.append((np.zeros(0, np.float32), 16000, []))
                continue
            x, sr = _read_wav(w.read_bytes())
            ends = []
            for line in s.read_text(encoding="latin-1").splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] != "#":
                    try:
                        ends.append((float(parts[0]), parts[2]))
                    except ValueError:
                        continue
            results.append((x, sr, _phones_from_ends(ends, phoneset, x.size / sr)))
    return results

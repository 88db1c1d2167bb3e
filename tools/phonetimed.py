"""Phoneme-timed synthetic speech from espeak-ng, through its C library's events.

    from phonetimed import synth
    audio, sr, phones = synth("Mama bought butter.", voice="en+m3")
    # phones: [(start_s, end_s, ipa), ...] on the timeline of ``audio``

The library reports every phoneme it speaks (``espeakEVENT_PHONEME``) with the audio
position it starts at, in IPA when asked (``espeakINITIALIZE_PHONEME_IPA``): that is what
makes the labels language-independent. Used offline only (training the viseme model,
bench/articulation.py); the lipdub package never imports it.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

_LIB_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so")
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_EV_LIST_TERMINATED, _EV_WORD, _EV_SENTENCE, _EV_END, _EV_PHONEME = 0, 1, 2, 5, 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))
_lock = threading.Lock()
_state: dict[str, object] = {}


def _lib() -> tuple[ctypes.CDLL, int]:
    if "lib" not in _state:
        lib = None
        for name in _LIB_NAMES:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            raise RuntimeError("libespeak-ng is not installed (apt-get install espeak-ng)")
        sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 200, None,
                                   _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA)
        if sr <= 0:
            raise RuntimeError("espeak_Initialize failed")
        cb = _CALLBACK(_on_audio)
        lib.espeak_SetSynthCallback(cb)
        _state.update(lib=lib, sr=sr, cb=cb)
    return _state["lib"], int(_state["sr"])  # type: ignore[return-value]


def _on_audio(wav, n, events) -> int:  # type: ignore[no-untyped-def]
    buf: list[np.ndarray] = _state["buf"]  # type: ignore[assignment]
    evs: list[tuple[int, int, str]] = _state["events"]  # type: ignore[assignment]
    if n > 0 and wav:
        buf.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    i = 0
    while events[i].type != _EV_LIST_TERMINATED:
        e = events[i]
        if e.type == _EV_PHONEME:
            label = bytes(e.id.string).split(b"\0")[0].decode("utf-8", "replace")
            evs.append((e.type, e.audio_position, label))
        elif e.type in (_EV_WORD, _EV_SENTENCE, _EV_END):
            evs.append((e.type, e.audio_position, ""))
        i += 1
    return 0


def synth(text: str, voice: str = "en", rate: int = 160, pitch: int = 50,
          pitch_range: int = 50, closures: bool = False,
          ) -> tuple[np.ndarray, int, list[tuple[float, float, str]]]:
    """Speak ``text``; return float32 mono audio, its sample rate and the phonemes as
    ``(start_s, end_s, ipa)``. Pauses between words are not phonemes (gaps in the list).
    With ``closures``, a stop starts where its closure does (``with_closures``)."""
    with _lock:
        lib, sr = _lib()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(_RATE, int(rate), 0)
        lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_RANGE, int(pitch_range), 0)
        _state["buf"], _state["events"] = [], []
        data = text.encode("utf-8") + b"\0"
        lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        buf: list[np.ndarray] = _state["buf"]  # type: ignore[assignment]
        events: list[tuple[int, int, str]] = _state["events"]  # type: ignore[assignment]
    audio = (np.concatenate(buf) if buf else np.zeros(0, np.int16)).astype(np.float32) / 32768
    total = audio.size / sr
    phones: list[tuple[float, float, str]] = []
    # A phoneme lasts until the next event of any kind (phoneme, word or sentence end).
    marks = sorted((pos / 1000.0, kind, label) for kind, pos, label in events)
    for k, (t, kind, label) in enumerate(marks):
        if kind != _EV_PHONEME or not label.strip() or label.strip() in ("_", "_:", "_!"):
            continue
        nxt = next((m[0] for m in marks[k + 1:] if m[0] > t), total)
        phones.append((t, min(nxt, total), label.strip()))
    return audio, sr, with_closures(audio, sr, phones) if closures else phones


_STOPS = set("pbtdkgcɟqɢʈɖ")
_SILENT_DB = 40.0  # a closure: this far under the loudest 10 ms of the utterance
_MAX_CLOSURE_S = 0.15  # longer is a pause, not a closure
_MAX_GAP_CLOSURE_S = 0.06  # a stop after a pause: the lips shut this long before it


def silent_frames(audio: np.ndarray, sr: int, rate: int) -> np.ndarray:
    """Per 1/``rate`` s of ``audio``: ``_SILENT_DB`` or more under its loudest frame (a
    closure or a pause)."""
    hop = max(sr // rate, 1)
    n = audio.size // hop
    if n == 0:
        return np.zeros(0, bool)
    power = (audio[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(1)
    db = 10.0 * np.log10(power + 1e-12)
    return np.asarray(db < db.max() - _SILENT_DB)


def with_closures(audio: np.ndarray, sr: int, phones: list[tuple[float, float, str]],
                  ) -> list[tuple[float, float, str]]:
    """``phones`` with each stop's silent closure moved into it. espeak-ng reports a stop
    (p, t, k; b, d, g where it devoices them) from its release: the silent gap before,
    when the lips or tongue are shut, ends the phone before it (in Spanish "apa", the
    first /a/ ends in the silence). Festival and flite label the closure as part of
    the stop, and the lips are shut through it; trained on espeak's timing, the viseme
    model learnt that a silent gap after a vowel is that vowel. The silent run (40 dB
    under the utterance's peak) right before a stop becomes the stop's, up to 150 ms;
    after a pause (a gap in the list), 60 ms of it."""
    rate = 200  # 5 ms frames: a closure is 20-100 ms
    silent = silent_frames(audio, sr, rate)
    n = silent.size
    if n == 0 or not phones:
        return phones
    out = list(phones)
    for i, (a, b, label) in enumerate(phones):
        if label[:1] not in _STOPS:
            continue
        k = min(int(a * rate), n)
        if k > 0 and not silent[k - 1]:  # the frame the release begins in
            k -= 1
        j = k
        while j > 0 and silent[j - 1] and (k - j + 1) / rate <= _MAX_CLOSURE_S:
            j -= 1
        if j == k:
            continue
        start = min(j / rate, a)
        prev = out[i - 1] if i > 0 else None
        if prev is not None and prev[1] >= a - 1e-3:  # the phone before runs up to it
            start = max(start, prev[0] + 0.01)
            out[i - 1] = (prev[0], start, prev[2])
        else:  # after a pause: the closure is somewhere in the silence
            start = max(start, a - _MAX_GAP_CLOSURE_S, prev[1] if prev else 0.0)
        out[i] = (start, b, label)
    return out

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
          pitch_range: int = 50) -> tuple[np.ndarray, int, list[tuple[float, float, str]]]:
    """Speak ``text``; return float32 mono audio, its sample rate and the phonemes as
    ``(start_s, end_s, ipa)``. Pauses between words are not phonemes (gaps in the list)."""
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
    return audio, sr, phones

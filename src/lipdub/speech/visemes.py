"""Audio to viseme posteriors: which mouth shape each 10 ms of speech needs.

A small multilayer perceptron reads log-mel spectra in a +-150 ms context and gives, per
10 ms, the probability of each viseme class below (bilabial closure, lip-teeth contact,
rounded and spread lips, open and mid vowels, other consonants, silence). The classes are
mouth shapes, not phonemes: they are the same in every language, which is what lets a
model trained on many languages work on one it never heard.

The weights (``viseme_mlp.npz``, ~0.4 MB, shipped in the package) were trained offline by
``tools/train_visemes.py`` on phoneme-timed speech from three synthesizers (espeak-ng in
many languages and voices, Festival and flite; their voices kal and slt are never used),
with noise, reverberation, band limits and level changes added so it holds on real
recordings. Inference is numpy only (no framework, no download).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from lipdub.speech.features import FEATURE_SR, frame_spans, frame_times_s, spans_mean, to_16k

SR = FEATURE_SR  # one rate for all speech analysis (features.to_16k)
HOP = 160  # 10 ms
WIN = 400  # 25 ms
N_FFT = 512
N_MELS = 40
FMIN, FMAX = 60.0, 7600.0
# Context frames (10 ms apart) stacked around each frame: denser near the centre, where
# the burst or murmur is; the outer ones see the neighbouring vowels.
CONTEXT = (-15, -11, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 11, 15)

CLASSES = ("sil", "bilabial", "labiodental", "round", "spread", "open", "mid", "cons")
SIL, BILABIAL, LABIODENTAL, ROUND, SPREAD, OPEN, MID, CONS = range(len(CLASSES))
N_FEATURES = (N_MELS + 1) * len(CONTEXT)


@lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return np.asarray(2595.0 * np.log10(1.0 + np.asarray(f) / 700.0))

    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SR)
    mels = np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), N_MELS + 2)
    edges = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    fb = np.zeros((N_MELS, freqs.size), np.float32)
    for m in range(N_MELS):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / max(c - lo, 1e-6)
        down = (hi - freqs) / max(hi - c, 1e-6)
        fb[m] = np.clip(np.minimum(up, down), 0.0, None)
    return fb


# Analysis frames per block (10 s). Each block's temporaries (frame indices, spectra,
# context-stacked features, the MLP's hidden layers) are some 15 MB; larger blocks made
# a minute of speech peak at 120 MB, so peak memory grew with the input's length.
_CHUNK = 1000
# The least spread (nats of log-mel energy) a short recording's normalisation divides by.
# A lone word ("Papa", "apa") spreads much less per band over its louder frames than a
# sentence, so dividing by its own spread blew its features up (over 1.3 times a
# sentence's, tests/speech/test_visemes_normalisation.py), and a one-word dub lost a
# quarter of its /p b m/ (tools/eval_visemes.py --short-words: 76 % heard, 84 % with the
# floor). Only under SHORT_LOUD_FRAMES louder frames (about two seconds of speech): on
# longer recordings the floor also bound a few bands of some voices (espeak's lowest and
# highest, the same test file), which the model was trained to read divided by their own
# spread, and the benchmarks' dubs moved (bench/quality.py snaps 0.14 -> 0.32 at c3b5862;
# docs/benchmarks.md, fifth pass).
SD_FLOOR = 1.0
SHORT_LOUD_FRAMES = 100


def log_mel(x16: np.ndarray) -> np.ndarray:
    """(n_frames, N_MELS + 1): log-mel energies and log total energy, frame i centred at
    i * 10 ms."""
    n = max(1, (x16.size + HOP - 1) // HOP + 1)
    pad = np.concatenate([np.zeros(WIN // 2, np.float32), x16, np.zeros(WIN, np.float32)])
    win = np.hanning(WIN).astype(np.float32)
    fb = _mel_matrix()
    out = np.empty((n, N_MELS + 1), np.float32)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        idx = np.arange(WIN)[None, :] + HOP * np.arange(a, b)[:, None]
        spec = np.fft.rfft(pad[idx] * win, n=N_FFT, axis=1)
        p = (spec.real**2 + spec.imag**2).astype(np.float32)
        out[a:b, :N_MELS] = np.log(p @ fb.T + 1e-8)
        out[a:b, N_MELS] = np.log(p.sum(1) + 1e-8)
    return out


def features(x16: np.ndarray) -> np.ndarray:
    """Normalised, context-stacked features, one row per 10 ms frame (see ``_normalised``)."""
    z = _normalised(x16)
    return _stacked(z, 0, z.shape[0])


def _normalised(x16: np.ndarray) -> np.ndarray:
    """Log-mel frames normalised per recording (mean and spread of the louder half of its
    frames, the spread at least ``SD_FLOOR`` on a short recording), so the microphone,
    room and level are taken out; the total-energy column is kept relative to the
    recording's speech peaks, since "how much quieter than the speech" is what tells a
    stop gap or a pause from a vowel."""
    lm = log_mel(x16)
    e = lm[:, N_MELS]
    floor = e.max() - 23.0  # 100 dB below the loudest frame: digital silence
    live = e > floor
    ref = lm[live] if live.sum() >= 10 else lm
    loud = ref[ref[:, N_MELS] >= np.median(ref[:, N_MELS])]
    mu = loud.mean(0)
    sd = loud.std(0) + 1e-3
    if loud.shape[0] < SHORT_LOUD_FRAMES:
        sd = np.maximum(sd, SD_FLOOR)
    z = (lm - mu) / sd
    peak = float(np.percentile(ref[:, N_MELS], 95))
    z[:, N_MELS] = (lm[:, N_MELS] - peak) / 4.0
    return np.clip(z, -6.0, 6.0, out=z)


def _stacked(z: np.ndarray, a: int, b: int) -> np.ndarray:
    """Rows ``a:b`` of the context-stacked features (neighbours clamped at the ends)."""
    n = z.shape[0]
    rows = np.arange(a, b)
    return np.concatenate([z[np.clip(rows + off, 0, n - 1)] for off in CONTEXT], axis=1)


@dataclass
class VisemeModel:
    """A ReLU MLP: ``layers`` of (weights, bias); softmax output over ``CLASSES``.

    With ``heads`` > 1 the last layer gives ``heads`` blocks of ``len(CLASSES)`` logits, one
    per ensemble member, and the posterior is the mean of their softmaxes (tools/
    train_visemes.py ``--merge posteriors``). Against a mean of logits it is flatter:
    more contacts between 0.3 and 0.4, fewer over 0.5; rendered, more /p b m/ near-closed
    on voices the model never heard and a lower open/bilabial contrast
    (docs/benchmarks.md, seventh pass)."""

    mean: np.ndarray
    scale: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    heads: int = 1

    def logits(self, feats: np.ndarray) -> np.ndarray:
        h = (feats - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                np.maximum(h, 0.0, out=h)
        return np.asarray(h)

    def posteriors(self, feats: np.ndarray) -> np.ndarray:
        h = self.logits(feats).reshape(len(feats), self.heads, len(CLASSES))
        h = h - h.max(axis=2, keepdims=True)
        p = np.exp(h)
        return np.asarray((p / p.sum(axis=2, keepdims=True)).mean(axis=1))

    def save(self, path: str) -> None:
        arrays: dict[str, np.ndarray] = {"mean": self.mean, "scale": self.scale,
                                         "classes": np.array(CLASSES),
                                         "context": np.array(CONTEXT),
                                         "heads": np.array(self.heads)}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"] = w.astype(np.float16)
            arrays[f"b{i}"] = b.astype(np.float32)
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


_weights_path: str | None = None


def use_weights(path: str | None) -> None:
    """Load the viseme model from ``path`` from now on (``None``: the shipped weights).
    For benchmarks and training runs that compare models; the product uses the shipped
    ones."""
    global _weights_path
    _weights_path = path
    load_model.cache_clear()


@lru_cache(maxsize=1)
def load_model() -> VisemeModel:
    if _weights_path is not None:
        return read_model(_weights_path)
    ref = resources.files("lipdub.speech").joinpath("viseme_mlp.npz")
    with resources.as_file(ref) as p:
        return read_model(str(p))


def read_model(path: str) -> VisemeModel:
    """A viseme model from an ``.npz`` written by :meth:`VisemeModel.save`."""
    with np.load(path) as z:
        if tuple(z["classes"].tolist()) != CLASSES or tuple(z["context"].tolist()) != CONTEXT:
            raise RuntimeError("viseme_mlp.npz does not match this version of lipdub")
        layers = []
        i = 0
        while f"w{i}" in z:
            layers.append((z[f"w{i}"].astype(np.float32), z[f"b{i}"].astype(np.float32)))
            i += 1
        heads = int(z["heads"]) if "heads" in z else 1  # files before heads had one
        if layers[-1][0].shape[1] != heads * len(CLASSES):
            raise RuntimeError(f"{path}: its last layer is not {heads} heads of "
                               f"{len(CLASSES)} classes")
        return VisemeModel(z["mean"].astype(np.float32), z["scale"].astype(np.float32),
                           layers, heads)


def viseme_posteriors(samples: np.ndarray, sr: int) -> np.ndarray:
    """(n_10ms_frames, len(CLASSES)) posteriors for mono or (n, ch) ``samples``; frame i is
    centred at i * 10 ms. Digitally silent frames are pinned to ``sil``."""
    x16 = to_16k(samples, sr)
    if x16.size == 0:
        out = np.zeros((1, len(CLASSES)))
        out[:, SIL] = 1.0
        return out
    z = _normalised(x16)
    model = load_model()
    post = np.empty((z.shape[0], len(CLASSES)), np.float32)
    for a in range(0, z.shape[0], _CHUNK):  # stacked features are 2.8 KB a frame
        b = min(z.shape[0], a + _CHUNK)
        post[a:b] = model.posteriors(_stacked(z, a, b))
    # The frame's energy column, 22 nats (95 dB) under the speech peaks.
    dead = z[:, N_MELS] < -5.5
    post[dead] = 0.0
    post[dead, SIL] = 1.0
    return post


@dataclass
class FrameVisemes:
    """Viseme posteriors at video frame times.

    ``post`` averages the 10 ms posteriors over each frame's span (what the frame mostly
    shows). ``bilabial`` and ``labiodental`` come from contact segments instead (runs of
    10 ms frames where the class is likely): a frame is in contact when its instant falls
    inside a segment or up to 20 ms before it (the lips meet as the sound starts, not
    after), and a segment too short to contain any frame instant still claims its
    nearest frame, so a short stop is never skipped. The value is the segment's peak
    posterior (0 outside segments).
    """

    post: np.ndarray  # (n, len(CLASSES))
    bilabial: np.ndarray  # (n,)
    labiodental: np.ndarray  # (n,)
    # Contact segments where the model is less sure (BILABIAL_NEAR): lips brought near,
    # not pressed.
    bilabial_near: np.ndarray  # (n,)


_LEAD_S = 0.02  # contact shown this long before its sound
# A contact segment is where the 30 ms mean of the posterior exceeds BILABIAL_CONTACT
# (lips pressed); segments that reach only BILABIAL_NEAR bring the lips near
# (speech/mouth.py near_closure_frames). On voices the model never heard (a model trained
# without flite, or without Festival's ked and ona voices: tools/train_visemes.py
# --leave-out), their bilabials often peak at 0.3-0.5.
BILABIAL_CONTACT = 0.5
BILABIAL_NEAR = 0.3


def smoothed(p10: np.ndarray) -> np.ndarray:
    """A class's 10 ms posterior as contact segments read it: its flat 30 ms mean."""
    # A flat 30 ms mean over one half keeps lone 10 ms spikes out. A narrower window or a
    # lower threshold found more /p b m/ in synthetic speech but pushed the closure rate
    # of real Mandarin news past tests/speech/test_articulation.py's bound, most of them
    # false.
    return np.convolve(p10, np.ones(3) / 3.0, mode="same")


def contact_segments(p10: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of 10 ms frames where ``smoothed(p10)`` exceeds ``threshold``."""
    on = smoothed(p10) > threshold
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _contact(p10: np.ndarray, t_v: np.ndarray, threshold: float = 0.5,
             below: float | None = None) -> np.ndarray:
    """Per video frame: strength of the contact segment it shows (see FrameVisemes);
    with ``below``, only of the segments that never reach it (the weak ones)."""
    out = np.zeros(t_v.shape[0])
    segments = contact_segments(p10, threshold)
    if not segments or t_v.size == 0:
        return out
    p = smoothed(p10)
    step = HOP / SR
    for a, b in segments:
        if below is not None and p[a:b].max() > below:
            continue
        # Frame i covers [i - 0.5, i + 0.5) x 10 ms.
        s, e = (a - 0.5) * step, (b - 0.5) * step
        # How sure the model is at its surest over what the window saw: the segment's
        # mean (as before) fell under one half for a short stop whose one strong 10 ms
        # frame sat just outside the run, and such stops were dropped downstream.
        strength = float(p10[max(a - 1, 0) : b + 1].max())
        inside = (t_v >= s - _LEAD_S) & (t_v < e)
        if not inside.any():
            inside = np.zeros_like(inside)
            inside[int(np.argmin(np.abs(t_v - 0.5 * (s + e))))] = True
        out[inside] = np.maximum(out[inside], strength)
    return out


def frame_visemes(
    samples: np.ndarray,
    sr: int,
    fps: float,
    n_frames: int,
    start_ms: float = 0.0,
    *,
    times_ms: np.ndarray | None = None,
) -> FrameVisemes:
    """Posteriors per video frame; frame ``k`` at ``start_ms + k / fps`` (or
    ``times_ms[k]``) on the timeline of ``samples``. Frames outside the audio are silence."""
    return visemes_at_frames(viseme_posteriors(samples, sr), fps, n_frames, start_ms,
                             times_ms=times_ms)


def visemes_at_frames(
    p10: np.ndarray,
    fps: float,
    n_frames: int,
    start_ms: float = 0.0,
    *,
    times_ms: np.ndarray | None = None,
) -> FrameVisemes:
    """:func:`frame_visemes` from 10 ms posteriors already computed."""
    n10 = p10.shape[0]
    t_v = frame_times_s(n_frames, fps, start_ms, times_ms)
    half = 0.5 / fps
    lo, hi = frame_spans(n10, t_v, fps)
    post = spans_mean(p10, lo, hi)
    bil = _contact(p10[:, BILABIAL], t_v, BILABIAL_CONTACT)
    # Only segments that never reach BILABIAL_CONTACT: a strong segment's weaker edges
    # would otherwise spread its closure into the vowels around it.
    near = _contact(p10[:, BILABIAL], t_v, BILABIAL_NEAR, below=BILABIAL_CONTACT)
    lab = _contact(p10[:, LABIODENTAL], t_v)
    outside = (t_v < -half) | (t_v > n10 * HOP / SR + half)
    post[outside] = 0.0
    post[outside, SIL] = 1.0
    bil[outside] = 0.0
    near[outside] = 0.0
    lab[outside] = 0.0
    return FrameVisemes(post, bil, lab, near)

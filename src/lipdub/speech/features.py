"""Audio features sampled at video frame times.

``speech_loudness`` is THE definition of "how loud the speech is at this video frame" that
the benchmark correlates mouth opening against; everything else here feeds the mouth model.

Time convention everywhere: video frame ``k`` is at ``start_ms + k * 1000 / fps`` on the
timeline of ``samples`` (sample 0 is at 0 ms), and each feature describes a short window
centred on that instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, resample_poly, sosfiltfilt

FEATURE_SR = 16000
SPEECH_BAND_HZ = (300.0, 3400.0)
LOUDNESS_WINDOW_MS = 40.0
SILENCE_DB = -100.0
_HOP = 160  # 10 ms at 16 kHz
_WIN = 400  # 25 ms at 16 kHz
# Band edges (Hz) chosen around the formants that separate mouth shapes: F1 rises with jaw
# opening (open vowels ~700 Hz, close vowels ~300 Hz), F2 rises with lip spreading (i/e
# ~2-2.5 kHz) and falls with rounding (u/o < 1 kHz); fricatives live above 4 kHz.
BANDS_HZ = ((80, 300), (300, 600), (600, 1100), (1100, 1800), (1800, 3000), (3000, 4500),
            (4500, 8000))  # fmt: skip


def _mono(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    return np.nan_to_num(x)


def frame_times_s(
    n_frames: int, fps: float, start_ms: float = 0.0, times_ms: np.ndarray | None = None
) -> np.ndarray:
    """Frame instants in seconds: the decoder's own ``times_ms`` when given (variable
    frame rate video), else the constant-rate grid."""
    if times_ms is not None:
        t = np.asarray(times_ms, dtype=np.float64)
        if t.shape != (n_frames,):
            raise ValueError(f"times_ms has {t.shape[0]} entries for {n_frames} frames")
        return t / 1000.0
    return start_ms / 1000.0 + np.arange(n_frames, dtype=np.float64) / fps


def frame_spans(n_an: int, t_v: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """For video frames at ``t_v`` (s): the [lo, hi) range of 10 ms analysis frames
    (frame i centred at i * 10 ms) inside each one's span, never empty."""
    t_an = np.arange(n_an) * _HOP / FEATURE_SR
    half = 0.5 / fps
    lo = np.clip(np.searchsorted(t_an, t_v - half), 0, n_an - 1)
    hi = np.clip(np.searchsorted(t_an, t_v + half, side="right"), 1, n_an)
    return lo, np.maximum(hi, lo + 1)


def spans_mean(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean of the rows ``lo[k]:hi[k]`` of ``v`` (1-D or 2-D), for every k, by cumsum."""
    c = np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(v, axis=0)])
    return np.asarray((c[hi] - c[lo]) / (hi - lo).reshape((-1,) + (1,) * (v.ndim - 1)))


def speech_loudness(
    samples: np.ndarray,
    sr: int,
    fps: float,
    n_frames: int,
    start_ms: float = 0.0,
    *,
    times_ms: np.ndarray | None = None,
) -> np.ndarray:
    """Speech-band loudness per video frame, dB (RMS of 300-3400 Hz over 40 ms centred).

    ``samples`` is mono ``(n,)`` or ``(n, channels)`` (channels are averaged). Frames whose
    window falls outside the audio, or that are digitally silent, read ``SILENCE_DB``.
    ``times_ms`` (one per frame) replaces the ``start_ms + k / fps`` grid when given.
    """
    x = _mono(samples).astype(np.float64)
    out = np.full(n_frames, SILENCE_DB)
    if x.size == 0 or n_frames <= 0:
        return out
    nyq = sr / 2
    hi = min(SPEECH_BAND_HZ[1], 0.95 * nyq)
    sos = butter(4, [SPEECH_BAND_HZ[0] / nyq, hi / nyq], btype="bandpass", output="sos")
    y = sosfiltfilt(sos, x) if x.size > 30 else x
    c = np.concatenate([[0.0], np.cumsum(y * y)])
    half = LOUDNESS_WINDOW_MS / 2000 * sr
    t = frame_times_s(n_frames, fps, start_ms, times_ms) * sr
    i0 = np.clip(np.round(t - half).astype(np.int64), 0, x.size)
    i1 = np.clip(np.round(t + half).astype(np.int64), 0, x.size)
    n = i1 - i0
    ok = n > 0
    ms = np.zeros(n_frames)
    ms[ok] = (c[i1[ok]] - c[i0[ok]]) / n[ok]
    out[ok] = np.maximum(10 * np.log10(np.maximum(ms[ok], 1e-30)), SILENCE_DB)
    return out


@dataclass
class FrameFeatures:
    """Per-video-frame acoustic features (one row per frame); dB values are absolute."""

    loudness: np.ndarray  # speech_loudness, dB
    bands: np.ndarray  # (n, len(BANDS_HZ)) band energies, dB
    centroid: np.ndarray  # log2 of spectral centroid (Hz) over 100-8000 Hz
    flatness: np.ndarray  # spectral flatness 300-6000 Hz, 0 (tonal) .. 1 (noise)
    voicing: np.ndarray  # peak normalised autocorrelation at 80-400 Hz pitch lags
    dip: np.ndarray  # dB by which the quietest 10 ms inside the frame is under the frame
    fps: float = 25.0

    @property
    def n(self) -> int:
        return int(self.loudness.shape[0])


def to_16k(samples: np.ndarray, sr: int) -> np.ndarray:
    """Mono float32 at FEATURE_SR (channels averaged, NaN zeroed): what every speech
    analysis reads. Sync converts once and passes it on (16 kHz input is not copied)."""
    x = _mono(samples)
    if sr == FEATURE_SR:
        return x
    g = math.gcd(sr, FEATURE_SR)
    return resample_poly(x, FEATURE_SR // g, sr // g).astype(np.float32)


# Analysis frames per block (10 s): a block's spectra and autocorrelations are some
# 20 MB, the same for a minute of speech as for ten seconds.
_CHUNK = 1000


def _analysis_frames(x: np.ndarray) -> np.ndarray:
    """Per-10 ms raw features, columns: 7 band dB, log2 centroid, flatness, voicing,
    total dB (0.1-4 kHz), full-band dB. 25 ms Hann frames, frame i centred at i * 10 ms."""
    pad = np.concatenate([np.zeros(_WIN // 2, np.float32), x, np.zeros(_WIN, np.float32)])
    n = max(1, (x.size + _HOP - 1) // _HOP + 1)
    f = np.fft.rfftfreq(512, 1 / FEATURE_SR)
    win = np.hanning(_WIN).astype(np.float32)[None, :]
    eps = 1e-10
    sel = (f >= 100) & (f <= 8000)
    sf = (f >= 300) & (f <= 6000)
    low = (f >= 100) & (f <= 4000)
    lag = slice(FEATURE_SR // 400, FEATURE_SR // 80)
    ac_win = np.fft.irfft(np.abs(np.fft.rfft(win[0], n=1024)) ** 2)
    ac_win = np.maximum(ac_win / ac_win[0], 1e-3)
    out = np.empty((n, len(BANDS_HZ) + 5))
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        idx = np.arange(_WIN)[None, :] + _HOP * np.arange(a, b)[:, None]
        frames = pad[idx] * win
        spec = np.fft.rfft(frames, n=512, axis=1)
        p = (spec.real**2 + spec.imag**2).astype(np.float64)
        for j, (lo, hi) in enumerate(BANDS_HZ):
            out[a:b, j] = 10 * np.log10(p[:, (f >= lo) & (f < hi)].sum(1) + eps)
        cen = (p[:, sel] * f[sel]).sum(1) / (p[:, sel].sum(1) + eps)
        out[a:b, 7] = np.log2(np.maximum(cen, 100.0))
        ps = p[:, sf] + eps
        out[a:b, 8] = np.exp(np.log(ps).mean(1)) / ps.mean(1)
        ac = np.fft.irfft(np.abs(np.fft.rfft(frames, n=1024, axis=1)) ** 2, axis=1)
        # Divided by the window's own autocorrelation (Boersma 1993): otherwise the Hann
        # taper alone caps a perfectly periodic 100 Hz voice near 0.4, and low voices
        # would read as unvoiced.
        norm = ac[:, lag] / (ac[:, :1] + eps) / ac_win[lag]
        out[a:b, 9] = np.clip(norm.max(1), 0, 1)
        out[a:b, 10] = 10 * np.log10(p[:, low].sum(1) + eps)
        out[a:b, 11] = 10 * np.log10(p.sum(1) + eps)
    return out


def frame_features(
    samples: np.ndarray,
    sr: int,
    fps: float,
    n_frames: int,
    start_ms: float = 0.0,
    *,
    times_ms: np.ndarray | None = None,
) -> FrameFeatures:
    """Acoustic features at video frame times, from 10 ms analysis frames (see module doc)."""
    x = to_16k(samples, sr)
    # Loudness from the 16 kHz copy: its 300-3400 Hz band is intact there, and the
    # zero-phase band-pass costs a third of what it does at 48 kHz (a minute of audio, twice
    # per sync: 0.3 s).
    loud = speech_loudness(x, FEATURE_SR, fps, n_frames, start_ms, times_ms=times_ms)
    if x.size == 0:
        z = np.zeros(n_frames)
        return FrameFeatures(
            loud, np.full((n_frames, len(BANDS_HZ)), SILENCE_DB), z + 10, z, z, z, fps
        )
    raw = _analysis_frames(x)
    eps = 1e-10
    nb = len(BANDS_HZ)
    bands = raw[:, :nb]
    cen, flat, voi, tot, energy = (raw[:, nb + k].copy() for k in range(5))
    n_an = raw.shape[0]
    # Digital silence has no pitch or spectral shape; keep those features neutral there.
    dead = energy < energy.max() - 80
    voi[dead] = 0
    flat[dead] = 1

    # Video frames are 33-40 ms apart: average the 10 ms frames in each one's span
    # (power-like values in the linear domain) and keep the span's deepest 10 ms dip.
    t_v = frame_times_s(n_frames, fps, start_ms, times_ms)
    lo, hi = frame_spans(n_an, t_v, fps)
    outside = (t_v < 0) | (t_v > x.size / FEATURE_SR)

    def span_mean(v: np.ndarray) -> np.ndarray:
        return spans_mean(v, lo, hi)

    bands_v = 10 * np.log10(span_mean(10 ** (bands / 10)) + eps)
    tot_v = 10 * np.log10(span_mean(10 ** (tot / 10)) + eps)
    tot_min = np.array([tot[a:b].min() for a, b in zip(lo, hi, strict=True)])
    dip = np.clip(tot_v - tot_min, 0, 40)
    w = 10 ** (tot / 10)
    wsum = span_mean(w) + eps
    cen_v = span_mean(cen * w) / wsum
    flat_v = span_mean(flat * w) / wsum
    voi_v = span_mean(voi * w) / wsum
    bands_v[outside] = SILENCE_DB
    for v, neutral in ((cen_v, 10.0), (flat_v, 1.0), (voi_v, 0.0), (dip, 0.0)):
        v[outside] = neutral
    return FrameFeatures(loud, bands_v, cen_v, flat_v, voi_v, dip, fps)

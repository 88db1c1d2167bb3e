"""AAC settings: encoder CPU against the loss they add, on real speech and music.

    .venv/bin/python -m bench.aac

Every output of a sync carries a new AAC track (the mix), so its encoder is part of the
render's cost: FFmpeg's default "twoloop" coder takes about 2.3 s of CPU a minute of
stereo here, as much as compositing 400 frames. Each source below (speech in six
languages, and the sound of three videos: speech over a room, singing over music) is
decoded at 48 kHz stereo, encoded with each setting, decoded again and aligned to the
source (the encoder's priming delay found by cross-correlation). Printed per setting:
encoder CPU relative to the first setting (the one used before this measurement), and
the loss against the source, as the worst clip and the mean:

* SNR, dB: the waveform error (AAC is not waveform-exact: this mostly tracks bitrate);
* LSD, dB: log-spectral distance, RMS over 20 ms frames that are not silence and over
  frequencies up to 15 kHz: the spectral error a listener hears as noise or dullness.

The rule for a change: the cheapest setting whose LSD is within 0.05 dB of the current
one's (twoloop, 192 kb/s: lipdub.media.video.VideoWriter) on every clip. Arguments replace
the list: ``fast:192000`` (coder:bit rate).
"""

from __future__ import annotations

import io
import sys

import av
import numpy as np

from bench._clips import MEDIA
from bench.common import cpu as _cpu
from lipdub.media.audio import decode_audio

SR = 48000
SOURCES = ["musetalk__eng.wav", "musetalk__sun.wav", "sadtalker__chinese_news.wav",
           "sadtalker__deyu.wav", "sadtalker__japanese.wav", "sadtalker__eluosi.wav",
           "sadtalker__WDA_KatieHill_000.mp4", "facerecognition__short_hamilton_clip.mp4",
           "vasp__combine001.mp4"]
SETTINGS = [("twoloop", 192000), ("fast", 192000), ("fast", 224000), ("fast", 256000),
            ("twoloop", 160000)]


def encode(pcm: np.ndarray, coder: str, bit_rate: int) -> tuple[bytes, float]:
    """(m4a bytes, encoder CPU seconds) of (N, 2) float32 ``pcm``, in blocks as the
    renderer's writer feeds it."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="mp4")
    s = out.add_stream("aac", rate=SR)
    s.layout = "stereo"
    s.bit_rate = bit_rate
    s.options = {"aac_coder": coder}
    c0 = _cpu()
    for i in range(0, len(pcm), 8192):
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[i:i + 8192].T), format="fltp",
                                       layout="stereo")
        f.sample_rate = SR
        f.pts = i
        for p in s.encode(f):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    cpu = _cpu() - c0
    out.close()
    return buf.getvalue(), cpu


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
    return np.concatenate(chunks, axis=1).T.astype(np.float32)  # (N, 2), fltp planes


def aligned(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out`` shifted by the lag (0..4096 samples: the encoder's priming) that best
    matches ``ref``, cut to its length."""
    a, b = ref[: SR * 4, 0], out[: SR * 4 + 4096, 0]
    best = max(range(4097), key=lambda k: float(a @ b[k : k + len(a)])
               if k + len(a) <= len(b) else -np.inf)
    o = out[best : best + len(ref)]
    return np.pad(o, ((0, len(ref) - len(o)), (0, 0)))


def loss(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(SNR dB, LSD dB) of ``out`` against ``ref`` (both (N, 2))."""
    err = out - ref
    snr = 10 * np.log10(float((ref**2).sum()) / max(float((err**2).sum()), 1e-20))
    n = int(0.02 * SR)
    win = np.hanning(n).astype(np.float32)
    frames = len(ref) // n - 1
    top = int(15000 * n / SR)
    lsd = []
    for ch in range(2):
        idx = np.arange(frames)[:, None] * n + np.arange(n)[None, :]
        r = np.abs(np.fft.rfft(ref[idx, ch] * win, axis=1))[:, 1:top] ** 2
        o = np.abs(np.fft.rfft(out[idx, ch] * win, axis=1))[:, 1:top] ** 2
        energy = r.sum(1)
        loud = energy > 1e-4 * energy.max()  # not silence: 40 dB under the loudest frame
        d = 10 * np.log10((r[loud] + 1e-10) / (o[loud] + 1e-10))
        lsd.append(np.sqrt((d**2).mean(1)).mean())
    return float(snr), float(np.mean(lsd))


def main(settings: list[tuple[str, int]]) -> None:
    table: dict[tuple[str, int], list[tuple[float, float, float]]] = {s: [] for s in settings}
    seconds = 0.0
    for name in SOURCES:
        pcm = decode_audio(MEDIA / name, SR, 2)
        seconds += len(pcm) / SR
        for s in settings:
            data, cpu = encode(pcm, *s)
            snr, lsd = loss(pcm, aligned(pcm, decode(data)))
            table[s].append((cpu, snr, lsd))
        print(f"{name:45s} " + "  ".join(f"{c}:{b // 1000}k {r[-1][1]:5.1f} dB {r[-1][2]:4.2f}"
                                         for (c, b), r in table.items()), flush=True)
    base = table[settings[0]]
    print(f"\n{seconds:.0f} s of audio in {len(SOURCES)} clips; relative to "
          f"{settings[0][0]} {settings[0][1] // 1000}k (CPU {sum(r[0] for r in base):.2f} s)")
    print(f"{'setting':16s} {'CPU':>5s} | {'SNR dB mean':>11s} {'worst d':>7s} | "
          f"{'LSD dB mean':>11s} {'worst d':>7s}")
    for s, rows in table.items():
        cpu = sum(r[0] for r in rows) / sum(r[0] for r in base)
        dsnr = [r[1] - b[1] for r, b in zip(rows, base, strict=True)]
        dlsd = [r[2] - b[2] for r, b in zip(rows, base, strict=True)]
        print(f"{s[0] + ' ' + str(s[1] // 1000) + 'k':16s} {cpu:5.2f} | "
              f"{np.mean([r[1] for r in rows]):11.1f} {min(dsnr):+7.2f} | "
              f"{np.mean([r[2] for r in rows]):11.2f} {max(dlsd):+7.2f}")


if __name__ == "__main__":
    args = [(a.split(":")[0], int(a.split(":")[1])) for a in sys.argv[1:]]
    main(args or SETTINGS)

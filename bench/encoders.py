"""x264 settings: encoder CPU against the loss they add, on real clips.

    .venv/bin/python -m bench.encoders

Each clip's frames are decoded once and held; each setting encodes them (threads on, as
the renderer does) and is decoded again to measure the loss against the decoded source:
PSNR of luma (every frame) and SSIM of luma (every 5th frame, 11x11 Gaussian window).
Printed per setting, as means over the clips: encoder CPU relative to veryfast CRF 18
(the setting before this measurement), PSNR and SSIM deltas against it, and bitrate
relative to it. The renderer's setting (lipdub.media.video.DEFAULT_PRESET / DEFAULT_CRF)
is the fastest whose loss is no worse than veryfast CRF 18's on every clip within
0.1 dB / 0.0005 SSIM, among those at most twice its bits. Arguments replace the list:
``superfast:16:mbtree=1:rc-lookahead=10`` (preset:CRF[:x264-params]).
"""

from __future__ import annotations

import io
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from bench._clips import MEDIA, speed_clip
from bench.common import cpu

CLIPS = ["videoretalking__face_2.mp4", "videoretalking__face_4.mp4",
         "sadtalker__WDA_KatieHill_000.mp4", "liveportrait__d20.mp4", "vasp__combine001.mp4"]
# (preset, CRF, x264-params): the presets around today's, and superfast with the
# macroblock-tree rate control put back (it gives static backgrounds their quality).
SETTINGS = [("veryfast", 18, ""), ("veryfast", 17, ""), ("faster", 18, ""),
            ("superfast", 20, ""), ("superfast", 18, ""), ("superfast", 17, ""),
            ("superfast", 18, "mbtree=1:rc-lookahead=10"),
            ("superfast", 17, "mbtree=1:rc-lookahead=10:subme=2"),
            ("superfast", 16, "mbtree=1:rc-lookahead=10"),
            ("superfast", 17, "mbtree=1:rc-lookahead=10:bframes=1"),
            ("superfast", 16, "mbtree=1:rc-lookahead=10:bframes=1"),  # the renderer's
            ("ultrafast", 18, ""), ("ultrafast", 16, "")]
if len(sys.argv) > 1:  # e.g. superfast:18:mbtree=1:rc-lookahead=10
    SETTINGS = [SETTINGS[0]] + [(a.split(":")[0], int(a.split(":")[1]),
                                 ":".join(a.split(":")[2:])) for a in sys.argv[1:]]
MAX_FRAMES = 250


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float32), b.astype(np.float32)
    c1, c2 = 6.5025, 58.5225
    mu_a, mu_b = cv2.GaussianBlur(a, (11, 11), 1.5), cv2.GaussianBlur(b, (11, 11), 1.5)
    saa = cv2.GaussianBlur(a * a, (11, 11), 1.5) - mu_a**2
    sbb = cv2.GaussianBlur(b * b, (11, 11), 1.5) - mu_b**2
    sab = cv2.GaussianBlur(a * b, (11, 11), 1.5) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    return float((num / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))).mean())


def frames_of(path: Path) -> tuple[list[np.ndarray], Fraction, int, int]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        out = []
        for f in c.decode(s):
            out.append(f.to_ndarray(format="yuv420p"))
            if len(out) >= MAX_FRAMES:
                break
        return out, Fraction(s.average_rate or 25), f.width & ~1, f.height & ~1


def encode(frames: list[np.ndarray], rate: Fraction, w: int, h: int, preset: str,
           crf: int, params: str) -> tuple[bytes, float]:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as o:
        v = o.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"crf": str(crf), "preset": preset, "threads": "2",
                     **({"x264-params": params} if params else {})}
        v.codec_context.time_base = 1 / rate
        c0 = cpu()
        for i, y in enumerate(frames):
            f = av.VideoFrame.from_ndarray(y[: h * 3 // 2, :w] if y.shape[1] == w else
                                           np.ascontiguousarray(y), format="yuv420p")
            f.pts, f.time_base = i, v.codec_context.time_base
            for p in v.encode(f):
                o.mux(p)
        for p in v.encode():
            o.mux(p)
        spent = cpu() - c0
    return buf.getvalue(), spent


def loss(data: bytes, ref: list[np.ndarray], h: int) -> tuple[float, float]:
    ps, ss = [], []
    with av.open(io.BytesIO(data)) as d:
        for i, f in enumerate(d.decode(video=0)):
            y = f.to_ndarray(format="yuv420p")[:h]
            r = ref[i][:h, : y.shape[1]]
            mse = float(np.mean((y.astype(np.float32) - r.astype(np.float32)) ** 2))
            ps.append(10 * np.log10(255**2 / max(mse, 1e-6)))
            if i % 5 == 0:
                ss.append(ssim(y, r))
    return float(np.mean(ps)), float(np.mean(ss))


def main() -> None:
    paths = [MEDIA / c for c in CLIPS] + [speed_clip(720, 10), speed_clip(1080, 10)]
    rows: dict[tuple[str, int, str], list[tuple[float, float, float, float]]] = {}
    for path in paths:
        frames, rate, w, h = frames_of(path)
        if frames[0].shape[1] != w or frames[0].shape[0] != h * 3 // 2:
            frames = [cv2.cvtColor(cv2.resize(cv2.cvtColor(y, cv2.COLOR_YUV2RGB_I420), (w, h)),
                                   cv2.COLOR_RGB2YUV_I420) for y in frames]
        secs = len(frames) / float(rate)
        for preset, crf, params in SETTINGS:
            data, spent = encode(frames, rate, w, h, preset, crf, params)
            p, s = loss(data, frames, h)
            kbps = len(data) * 8 / secs / 1000
            rows.setdefault((preset, crf, params), []).append((spent, p, s, kbps))
        ref = rows[SETTINGS[0]][-1]
        print(f"{path.name[:34]:34s} {w}x{h}: " + "  ".join(
            f"{pr}/{c}{'+' if x else ''} cpu {r[-1][0] / ref[0]:.2f} dB {r[-1][1] - ref[1]:+.2f} "
            f"kb {r[-1][3] / ref[3]:.1f}" for (pr, c, x), r in rows.items()
            if (pr, c, x) != SETTINGS[0]),
            flush=True)
    base = rows[SETTINGS[0]]
    print()
    print(f"{'setting':44s} {'enc CPU':>8s} {'PSNR-Y dB':>10s} {'worst':>7s} {'SSIM':>8s} "
          f"{'worst':>8s} {'bits':>6s}   (relative to veryfast CRF 18, means over "
          f"{len(paths)} clips)")
    for (preset, crf, params), r in rows.items():
        a = np.array(r)
        b = np.array(base)
        dp, ds = a[:, 1] - b[:, 1], a[:, 2] - b[:, 2]
        name = f"{preset} {crf} {params}".strip()
        print(f"{name:44s} {np.mean(a[:, 0] / b[:, 0]):8.2f} "
              f"{np.mean(dp):+10.2f} {dp.min():+7.2f} {np.mean(ds):+8.4f} {ds.min():+8.4f} "
              f"{np.mean(a[:, 3] / b[:, 3]):6.2f}")


if __name__ == "__main__":
    main()

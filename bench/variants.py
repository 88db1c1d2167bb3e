"""Sources of the kinds users upload, through identify and sync: timing, geometry, colour.

    .venv/bin/python -m bench.variants

Variants of videoretalking__face_2 made with PyAV (tests/media/variants.py): trimmed by
stream copy at 1.3 s (an edit list), re-encoded nearly losslessly as 10-bit 4:2:0, 4:4:4,
4:2:2, full range, and all at once (10-bit 4:4:4 full-range BT.601, anamorphic 4:3
pixels, an odd width). Each is identified and synced (1.5 s of new speech at 0.2 s).
Printed per variant: what probe reports (frames, ms) against what decodes, the output's
video and audio lengths, pixel shape and colour tags kept, and the levels of the pixels
away from the face against the source's (luma at 8 bits, rounded from 10): the mean
shift ("bias", levels) and the PSNR (dB), which includes x264's own loss.
"""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

import lipdub
from bench.common import MEDIA
from lipdub.media.video import iter_frames, probe
from tests.media.variants import luma8, reencoded, trimmed

HEAD = MEDIA / "videoretalking__face_2.mp4"
SPEECH = MEDIA / "videoretalking__audio_1.wav"
KINDS: dict[str, dict[str, object]] = {
    "plain 4:2:0": {},
    "10-bit 4:2:0": {"pix_fmt": "yuv420p10le"},
    "4:4:4": {"pix_fmt": "yuv444p"},
    "4:2:2": {"pix_fmt": "yuv422p"},
    "full range": {"color_range": 2},
    "all at once": {"pix_fmt": "yuv444p10le", "color_range": 2, "colorspace": 6,
                    "color_primaries": 6, "color_trc": 6, "size": (635, 844),
                    "sample_aspect": Fraction(4, 3)},
}


def tags(path: Path) -> tuple[object, ...]:
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        return (cc.sample_aspect_ratio, int(cc.color_primaries), int(cc.color_trc),
                int(cc.colorspace), int(cc.color_range))


def run(video: Path, out: Path) -> None:
    session = lipdub.identify(video)
    lipdub.sync(video, [lipdub.FaceAudio(session.faces[0].face_id, SPEECH, 0, 1500,
                                         insert_ms=200)], out_path=out, session=session)


def levels(src: Path, out: Path) -> tuple[float, float]:
    with av.open(str(src)) as a, av.open(str(out)) as b:
        xs = [luma8(f) for f in a.decode(a.streams.video[0])]
        ys = [luma8(f) for f in b.decode(b.streams.video[0])]
    # An output at video levels from a full-range source is compared as the picture it
    # shows: its codes mapped back to full range.
    stretch = tags(src)[4] == 2 and tags(out)[4] != 2
    errs = []
    for x, y in zip(xs, ys, strict=False):
        h, w = min(x.shape[0], y.shape[0]), min(x.shape[1], y.shape[1])
        away = np.ones((h, w), bool)
        away[h // 4:, w // 6: 5 * w // 6] = False  # the lower face and around it
        yy = y[:h, :w][away].astype(np.float64)
        if stretch:
            yy = (yy - 16) * 255 / 219
        errs.append(yy - x[:h, :w][away])
    e = np.concatenate(errs)
    return float(e.mean()), float(10 * np.log10(255**2 / np.mean(e**2)))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        print("1. trimmed by stream copy at 1.3 s (edit list)")
        t = trimmed(HEAD, d / "trimmed.mp4", 1.3)
        info = probe(t)
        decoded = sum(1 for _ in iter_frames(t))
        run(t, d / "trimmed_out.mp4")
        with av.open(str(d / "trimmed_out.mp4")) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            vs = float(v.duration * v.time_base) if v.duration else float("nan")
            aus = float(a.duration * a.time_base) if a.duration else float("nan")
        print(f"   probe {info.frame_count} frames {info.duration_ms} ms | decoded "
              f"{decoded} frames | output video {vs:.3f} s audio {aus:.3f} s\n")
        print("2. re-encoded variants, synced")
        print(f"   {'variant':14s} {'SAR kept':>8s} {'tags kept':>9s} {'width':>11s} "
              f"{'bias':>6s} {'PSNR dB':>7s}")
        for name, kw in KINDS.items():
            src = reencoded(HEAD, d / "src.mp4", seconds=2.0, **kw)  # type: ignore[arg-type]
            run(src, d / "out.mp4")
            bias, psnr = levels(src, d / "out.mp4")
            ts, to = tags(src), tags(d / "out.mp4")
            width = f"{probe(src).width}->{probe(d / 'out.mp4').width}"
            print(f"   {name:14s} {str(ts[0] == to[0] or not ts[0]):>8s} "
                  f"{str(ts[1:] == to[1:]):>9s} {width:>11s} {bias:6.2f} {psnr:7.2f}")


if __name__ == "__main__":
    main()

"""Benchmark clips made from the real media: a talking head placed in 720p / 1080p frames.

The shared media has no 720p or 1080p talking head, so we scale a real one
(infinitetalk__ref_video, 458x458, 15 s) into a 16:9 frame over a blurred copy of itself,
the way such footage is usually framed. Cached under bench/.cache.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CACHE = Path(__file__).resolve().parent / ".cache"
SOURCE = MEDIA / "infinitetalk__ref_video.mp4"


def talking_head(height: int, *, repeat: int = 1, source: Path = SOURCE) -> Path:
    """The source clip framed at 16:9 ``height`` (720, 1080), optionally looped."""
    width = height * 16 // 9
    out = CACHE / f"{source.stem}_{height}p_x{repeat}.mp4"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    with av.open(str(source)) as src, av.open(str(tmp), "w") as dst:
        vin = src.streams.video[0]
        ain = src.streams.audio[0] if src.streams.audio else None
        vout = dst.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.options = {"crf": "20", "preset": "veryfast"}
        aout = dst.add_stream("aac", rate=48000) if ain is not None else None
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(vin)]
        audio = []
        if ain is not None:
            src.seek(0)
            res = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
            for af in src.decode(ain):
                for r in res.resample(af):
                    audio.append(r.to_ndarray())
        n = 0
        for _ in range(repeat):
            for rgb in frames:
                bg = cv2.resize(cv2.blur(rgb, (31, 31)), (width, height))
                side = height
                face = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
                x0 = (width - side) // 2
                bg[:, x0 : x0 + side] = face
                vf = av.VideoFrame.from_ndarray(bg, format="rgb24")
                vf.pts = n
                n += 1
                for p in vout.encode(vf):
                    dst.mux(p)
        for p in vout.encode():
            dst.mux(p)
        if aout is not None and audio:
            pcm = np.concatenate(audio, axis=1)
            pcm = np.tile(pcm, (1, repeat))
            for i in range(0, pcm.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(pcm[:, i : i + 1024]), format="fltp", layout="stereo"
                )
                af.sample_rate = 48000
                af.pts = i
                for p in aout.encode(af):
                    dst.mux(p)
            for p in aout.encode():
                dst.mux(p)
    tmp.replace(out)
    return out

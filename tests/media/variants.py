"""Variants of the shared clips of the kinds users upload, made with PyAV (no ffmpeg CLI).

Trimmed with stream copy (an edit list: the frames before the cut stay stored and are
marked discarded), a video track that starts later than its sound, and re-encodes in
the pixel formats, ranges, colour tags and pixel shapes phones and cameras write.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _remux(src: Path, out: Path, shift_s: Callable[[str], float]) -> Path:
    """``src``'s picture and sound copied packet by packet into ``out``, each stream's
    timestamps moved by ``shift_s(kind)`` seconds."""
    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in inp.streams
                   if s.type in ("video", "audio")}
        for p in inp.demux():
            if p.dts is None or p.stream.index not in streams:
                continue
            shift = int(round(shift_s(p.stream.type) / p.time_base))
            p.pts += shift
            p.dts += shift
            p.stream = streams[p.stream.index]
            dst.mux(p)
    return out


def trimmed(src: Path, out: Path, cut_s: float) -> Path:
    """``src`` cut at ``cut_s`` seconds by stream copy, as trimming tools do (ffmpeg
    ``-ss cut -c copy``): every packet is kept, timestamps move by ``cut_s``, and the
    muxer writes an edit list that starts the presentation at the cut."""
    return _remux(src, out, lambda _kind: -cut_s)


def video_late(src: Path, out: Path, delay_s: float) -> Path:
    """``src`` with its picture track starting ``delay_s`` after its sound (stream copy):
    a player shows the first frame at ``delay_s`` with the sound that plays there."""
    return _remux(src, out, lambda kind: delay_s if kind == "video" else 0.0)


def reencoded(src: Path, out: Path, *, seconds: float = 2.0, codec: str = "libx264",
              pix_fmt: str = "yuv420p", color_range: int = 1, colorspace: int = 1,
              color_primaries: int = 1, color_trc: int = 1, size: tuple[int, int] | None = None,
              sample_aspect: Fraction | None = None, qp: int = 4) -> Path:
    """The first ``seconds`` of ``src`` (picture only) re-encoded nearly losslessly in
    ``pix_fmt`` at ``color_range`` (1 video levels, 2 full), tagged with the colour
    (FFmpeg's enum values: 1 = BT.709, 5/6 = BT.601) and pixel shape given; ``size``
    rescales the stored picture (an anamorphic file stores fewer columns than it shows)."""
    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        vin = inp.streams.video[0]
        rate = vin.average_rate or Fraction(25)
        w, h = size or (vin.codec_context.width, vin.codec_context.height)
        v = dst.add_stream(codec, rate=rate)
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        cc = v.codec_context
        cc.color_range = color_range
        cc.colorspace = colorspace
        cc.color_primaries = color_primaries
        cc.color_trc = color_trc
        if sample_aspect is not None:
            cc.sample_aspect_ratio = sample_aspect
        if codec == "libx264":
            v.options = {"qp": str(qp), "preset": "ultrafast"}
        elif codec == "libx265":
            v.options = {"x265-params": f"qp={qp}:log-level=error", "preset": "ultrafast"}
        n = int(round(seconds * float(rate)))
        for i, frame in enumerate(inp.decode(vin)):
            if i >= n:
                break
            f = frame.reformat(width=w, height=h, format=pix_fmt,
                               dst_color_range=color_range,
                               interpolation="BICUBIC")
            f.color_range = color_range
            f.colorspace = colorspace
            f.color_primaries = color_primaries
            f.color_trc = color_trc
            f.pts = i
            f.time_base = Fraction(1) / rate
            for p in v.encode(f):
                dst.mux(p)
        for p in v.encode():
            dst.mux(p)
    return out


def luma8(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame's luma at 8 bits, by exact arithmetic (not libswscale): the
    reference the pipeline's own conversion is judged against."""
    name = frame.format.name
    if "10" in name:
        y = np.frombuffer(memoryview(frame.planes[0]), np.uint16).reshape(
            frame.height, -1)[:, : frame.width]
        return np.clip(np.rint(y / 4.0), 0, 255).astype(np.uint8)
    y8 = np.frombuffer(memoryview(frame.planes[0]), np.uint8).reshape(
        frame.height, -1)[:, : frame.width]
    return y8.copy()

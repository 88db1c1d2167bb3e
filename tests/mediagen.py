"""Small synthetic videos the tests write themselves with PyAV."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np


def write_video(
    path: Path,
    frames: int,
    size: tuple[int, int],
    draw: Callable[[int], np.ndarray],
    fps: int = 25,
    audio: np.ndarray | None = None,
    sr: int = 48000,
) -> Path:
    """Encode ``frames`` RGB frames from ``draw(i)`` (and optional mono float audio)."""
    w, h = size
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "18", "preset": "veryfast"}
        as_ = None
        if audio is not None:
            as_ = c.add_stream("aac", rate=sr)
            as_.layout = "mono"
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(draw(i)), format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if as_ is not None and audio is not None:
            a = audio.astype(np.float32)[None, :]
            for i in range(0, a.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(a[:, i : i + 1024]),
                                                format="fltp", layout="mono")
                af.sample_rate = sr
                af.pts = i
                for p in as_.encode(af):
                    c.mux(p)
            for p in as_.encode():
                c.mux(p)
    return path


def pan_zoom(image_path: Path, out: Path, seconds: float = 3.0, size=(640, 384)) -> Path:
    """A slow pan and zoom over a still photo: faces that move a little in every frame."""
    img = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    n = int(seconds * 25)

    def draw(i: int) -> np.ndarray:
        t = i / max(n - 1, 1)
        zoom = 1.0 + 0.15 * t
        cw, ch = w / zoom, h / zoom
        x0 = (w - cw) * (0.3 + 0.4 * t)
        y0 = (h - ch) * 0.5
        m = np.array([[size[0] / cw, 0, -x0 * size[0] / cw], [0, size[1] / ch, -y0 * size[1] / ch]])
        return cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR)

    return write_video(out, n, size, draw)


def enters_and_leaves(src: Path, out: Path, first: int, last: int, frames: int = 100,
                      size: tuple[int, int] = (640, 360)) -> Path:
    """A real talking head cut into a still background on frames ``first``..``last``
    only: a face that appears and disappears mid-shot (no cut: the rest of the picture
    stays), at 25 fps."""
    with av.open(str(src)) as c:
        heads = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    w, h = size
    bg = cv2.resize(cv2.blur(heads[0], (61, 61)), size)
    side = h * 2 // 3
    x0, y0 = (w - side) // 2, (h - side) // 2

    def draw(i: int) -> np.ndarray:
        img = bg.copy()
        if first <= i <= last:
            img[y0:y0 + side, x0:x0 + side] = cv2.resize(heads[i % len(heads)], (side, side),
                                                        interpolation=cv2.INTER_AREA)
        return img

    return write_video(out, frames, size, draw)


def no_faces(out: Path, seconds: float = 2.0) -> Path:
    """Moving coloured shapes on a gradient: plenty of edges, no faces."""
    w, h = 320, 240
    yy, xx = np.mgrid[0:h, 0:w]

    def draw(i: int) -> np.ndarray:
        img = np.stack([(xx + i * 3) % 256, (yy * 2) % 256, np.full_like(xx, 90)], -1)
        img = img.astype(np.uint8)
        cv2.circle(img, (40 + i * 4 % 240, 120), 30, (250, 250, 250), -1)
        cv2.rectangle(img, (200, 40 + i % 100), (260, 100 + i % 100), (10, 10, 10), -1)
        return img

    return write_video(out, int(seconds * 25), (w, h), draw)


def crop_video(src: Path, out: Path, seconds: float) -> Path:
    """The first ``seconds`` of a real clip, re-encoded with its sound: short media keep
    the end-to-end tests cheap on a small machine."""
    with av.open(str(src)) as c:
        v = c.streams.video[0]
        fps = int(round(float(v.average_rate or 25)))
        frames = []
        for f in c.decode(v):
            if f.time is not None and f.time >= seconds:
                break
            frames.append(f.to_ndarray(format="rgb24"))
    with av.open(str(src)) as c:
        a = c.streams.audio[0]
        sr = a.rate
        chunks = []
        for f in c.decode(a):
            if f.time is not None and f.time >= seconds:
                break
            chunks.append(f.to_ndarray().mean(axis=0))
    audio = np.concatenate(chunks)[: int(seconds * sr)].astype(np.float32)
    h, w = frames[0].shape[:2]
    return write_video(out, len(frames), (w, h), lambda i: frames[i], fps=fps, audio=audio,
                       sr=sr)

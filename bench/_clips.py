"""Benchmark clips made from the real media: a talking head placed in 720p / 1080p frames.

The shared media has no 720p or 1080p talking head, so we scale a real one
(infinitetalk__ref_video, 458x458, 15 s) into a 16:9 frame over a blurred copy of itself,
the way such footage is usually framed. Cached under bench/.cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.common import CACHE, MEDIA
from lipdub.media.audio import read_video_audio
from lipdub.media.video import VideoWriter, iter_frames, probe

SOURCE = MEDIA / "infinitetalk__ref_video.mp4"
# The clips are encoded the same way whatever the renderer's own settings are (these were
# its defaults when the clips were first made), so a cached clip and a new one match.
CLIP_ENCODING: dict[str, Any] = {"crf": 20, "preset": "veryfast", "x264_params": ""}


def talking_head(height: int, *, repeat: int = 1, source: Path = SOURCE) -> Path:
    """The source clip framed at 16:9 ``height`` (720, 1080), optionally looped."""
    width = height * 16 // 9
    out = CACHE / f"{source.stem}_{height}p_x{repeat}.mp4"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    info = probe(source)
    pcm = read_video_audio(source, 48000, 2)
    audio = None if pcm is None else np.tile(pcm, (repeat, 1))
    with VideoWriter(tmp, width, height, info.fps, audio=audio, sample_rate=48000,
                     **CLIP_ENCODING) as dst:
        for _ in range(repeat):  # decode again per loop: frames stream, nothing is held
            for fr in iter_frames(source):
                bg = cv2.resize(cv2.blur(fr.rgb, (31, 31)), (width, height))
                face = cv2.resize(fr.rgb, (height, height), interpolation=cv2.INTER_CUBIC)
                x0 = (width - height) // 2
                bg[:, x0 : x0 + height] = face
                dst.write(bg)
    tmp.replace(out)
    return out


# The heads of the speed benchmark's clips (bench/speed.py): real talking heads from the
# shared media, each looped to the clip's length.
HEADS = (SOURCE, MEDIA / "videoretalking__face_3.mp4", MEDIA / "liveportrait__d20.mp4")


def _looped(source: Path) -> Iterator[np.ndarray]:
    """The source's frames, RGB, forever (decoded again per loop: nothing is held)."""
    while True:
        yield from (fr.rgb for fr in iter_frames(source))


def speed_clip(height: int, seconds: int, faces: int = 1) -> Path:
    """A 16:9 ``height`` clip of ``seconds`` at 25 fps with ``faces`` talking heads side by
    side over a blurred copy of the first (one face: centred, full height), the first
    head's sound looped under it. Cached under bench/.cache."""
    width = (height * 16 // 9) & ~1
    out = CACHE / f"speed_{height}p_{seconds}s_{faces}f.mp4"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    fps = 25
    n = seconds * fps
    pcm = read_video_audio(SOURCE, 48000, 2)
    audio = None
    if pcm is not None:
        audio = np.resize(pcm, (seconds * 48000, pcm.shape[1]))  # np.resize repeats
    side = height if faces == 1 else min(height, width // faces)
    streams = [_looped(h) for h in HEADS[:faces]]
    with VideoWriter(tmp, width, height, fps, audio=audio, sample_rate=48000,
                     **CLIP_ENCODING) as dst:
        for _ in range(n):
            heads = [next(s) for s in streams]
            bg = cv2.resize(cv2.blur(cv2.resize(heads[0], (320, 320)), (9, 9)), (width, height))
            for i, h in enumerate(heads):
                face = cv2.resize(h, (side, side), interpolation=cv2.INTER_AREA
                                  if h.shape[0] > side else cv2.INTER_CUBIC)
                x0 = (width - side) // 2 if faces == 1 else i * (width // faces) + (
                    width // faces - side) // 2
                y0 = (height - side) // 2
                bg[y0 : y0 + side, x0 : x0 + side] = face
            dst.write(bg)
    tmp.replace(out)
    return out

"""Benchmark clips made from the real media: a talking head placed in 720p / 1080p frames.

The shared media has no 720p or 1080p talking head, so we scale a real one
(infinitetalk__ref_video, 458x458, 15 s) into a 16:9 frame over a blurred copy of itself,
the way such footage is usually framed. Cached under bench/.cache.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lipdub.media.audio import read_video_audio
from lipdub.media.video import VideoWriter, iter_frames, probe

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
    info = probe(source)
    pcm = read_video_audio(source, 48000, 2)
    audio = None if pcm is None else np.tile(pcm, (repeat, 1))
    with VideoWriter(tmp, width, height, info.fps, audio=audio, sample_rate=48000,
                     crf=20) as dst:
        for _ in range(repeat):  # decode again per loop: frames stream, nothing is held
            for fr in iter_frames(source):
                bg = cv2.resize(cv2.blur(fr.rgb, (31, 31)), (width, height))
                face = cv2.resize(fr.rgb, (height, height), interpolation=cv2.INTER_CUBIC)
                x0 = (width - height) // 2
                bg[:, x0 : x0 + height] = face
                dst.write(bg)
    tmp.replace(out)
    return out

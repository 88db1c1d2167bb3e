"""The render pipeline without the render: decode, re-encode and write the sound.

    .venv/bin/python -m bench.passthrough                 # the 720p 60 s speed clip
    .venv/bin/python -m bench.passthrough 1080 --repeat 3

Every frame of ``bench/_clips.speed_clip`` goes from the decode thread to the writer's
(``iter_frames`` -> ``BackgroundWriter(VideoWriter)``, the engine's own path for an
untouched frame), with the clip's own soundtrack as the audio to encode; prints wall and
CPU seconds, with and without the audio, each the fastest of ``--repeat`` interleaved
runs. What it measures is how the writer's threads share the machine (where the AAC
encoder runs, how it is fed), apart from compositing. To compare with an older writer,
run it with ``PYTHONPATH`` on a worktree of that commit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench._clips import speed_clip
from bench.common import cpu as _cpu
from lipdub.media.audio import read_video_audio
from lipdub.media.memory import tune_allocator
from lipdub.media.video import (
    BackgroundWriter,
    VideoWriter,
    iter_frames,
    probe,
    source_timing,
)


def run(video: Path, with_audio: bool, out: Path) -> tuple[float, float]:
    info = probe(video)
    audio = read_video_audio(video, 48000, 2) if with_audio else None
    rate, time_base = source_timing(video)
    c0, t0 = _cpu(), time.perf_counter()
    first = None
    with BackgroundWriter(VideoWriter(out, info.width, info.height, rate,
                                      time_base=time_base, audio=audio)) as w:
        for fr in iter_frames(video):
            first = fr.pts if first is None else first
            w.write_source(fr, None if fr.pts is None or first is None else fr.pts - first)
    return time.perf_counter() - t0, _cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description="decode + re-encode + sound, no render")
    ap.add_argument("height", type=int, nargs="?", default=720)
    ap.add_argument("--repeat", type=int, default=1)
    opts = ap.parse_args()
    height, repeat = opts.height, opts.repeat
    tune_allocator()
    video = speed_clip(height, 60, 1)
    best: dict[bool, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            for with_audio in (False, True):
                wall, cpu = run(video, with_audio, Path(tmp) / "out.mp4")
                if with_audio not in best or wall < best[with_audio][0]:
                    best[with_audio] = (wall, cpu)
    for with_audio, (wall, cpu) in best.items():
        print(f"{height}p 60 s {'with' if with_audio else 'without':7s} audio: "
              f"wall {wall:5.2f} s, CPU {cpu:5.2f} s")


if __name__ == "__main__":
    main()

"""CPU seconds (user + sys, all threads) and wall time of one sync, for A/B runs of two
engines back to back on the same machine state:

    .venv/bin/python -m bench.sync_cpu                       # this tree's engine
    PYTHONPATH=/work/wt-before/src .venv/bin/python -m bench.sync_cpu   # another commit's

Clip: bench/_clips.talking_head(720) (15 s), face_001, musetalk__eng.wav, original muted;
identify runs before the clock starts.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import lipdub
from bench._clips import MEDIA, talking_head


def main() -> None:
    video = talking_head(720)
    session = lipdub.identify(video)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        face = lipdub.FaceAudio(session.faces[0].face_id, MEDIA / "musetalk__eng.wav",
                                end_ms=session.video.duration_ms)
        lipdub.sync(video, [face], out_path=Path(tmp) / "out.mp4", session=session,
                    original_volume=0.0)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    print(f"engine {Path(lipdub.__file__).parent}: sync cpu {cpu:.2f} s, wall {wall:.2f} s")


if __name__ == "__main__":
    main()

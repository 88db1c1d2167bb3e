"""Speed of `identify`: wall time over video duration, and peak memory, at 720p and 1080p.

    .venv/bin/python -m bench.identify                 # every clip
    .venv/bin/python -m bench.identify 720p crowd      # those whose names hold a word

Each measurement runs in a fresh process so that its peak RSS is its own. Models are
loaded before the clock starts (a service loads them once); the load time is printed
apart. The x3 clip is the same video looped three times: peak memory must not grow.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench._clips import MEDIA, talking_head
from bench.common import run_child

CHILD = r"""
import json, resource, sys, time
from lipdub.faces import models
t0 = time.perf_counter()
models.preload()
load = time.perf_counter() - t0
import lipdub
import lipdub.faces.identify  # a running service has the code loaded: keep imports off the clock
from lipdub.media.video import probe
info = probe(sys.argv[1])
t0, c0 = time.perf_counter(), time.process_time()
turned = 0
try:
    session = lipdub.identify(sys.argv[1])
    faces = len(session.faces)
    # faces reported as turned too far to re-render, and faces with turned spans
    turned = sum(u.reason == "turned" for u in getattr(session, "unusable", []))
    turned += sum(any(s[2] == "turned" for s in getattr(f, "not_renderable", []))
                  for f in session.faces)
except lipdub.NoFacesError:
    faces = 0  # the crowd's faces are under the default minimum size
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"wall": wall, "cpu": cpu, "load": load, "duration_ms": info.duration_ms,
                  "faces": faces, "turned": turned, "w": info.width, "h": info.height,
                  # VmHWM: ru_maxrss would carry the forking bench's RSS across exec
                  "rss_mb": next(int(x.split()[1]) for x in open("/proc/self/status")
                                 if x.startswith("VmHWM")) / 1024}))
"""


def measure(path: Path) -> dict[str, float]:
    return run_child(CHILD, [str(path)], what=f"identify of {path.name}")


def main() -> None:
    clips = [
        ("talking head 720p", talking_head(720)),
        ("talking head 720p x3", talking_head(720, repeat=3)),
        ("talking head 1080p", talking_head(1080)),
        ("crowd 1080p (facenet video)", MEDIA / "facenetpytorch__video.mp4"),
        # scene changes, a profile close-up, three-quarter turns (issue 22)
        ("hamilton 360p", MEDIA / "facerecognition__short_hamilton_clip.mp4"),
    ]
    only = sys.argv[1:]  # names containing any of these words; all when none
    clips = [c for c in clips if not only or any(w in c[0] for w in only)]
    print(
        f"{'clip':32} {'size':>10} {'dur s':>6} {'wall s':>7} {'x dur':>6} {'cpu s':>6} "
        f"{'faces':>5} {'turned':>6} {'peak MB':>8} {'load s':>6}"
    )
    for name, path in clips:
        r = measure(path)
        dur = r["duration_ms"] / 1000
        print(
            f"{name:32} {int(r['w'])}x{int(r['h']):<5} {dur:6.1f} {r['wall']:7.2f} "
            f"{r['wall'] / dur:6.2f} {r['cpu']:6.2f} {int(r['faces']):5d} "
            f"{int(r['turned']):6d} {r['rss_mb']:8.0f} {r['load']:6.2f}"
        )


if __name__ == "__main__":
    main()

"""Turned faces: what identify finds and reports on the shared clips, what the turned-face
detector (dlib's CNN) costs, and whether the tracks of the quality clips moved.

    .venv/bin/python -m bench.turned --save bench/.cache/turned_after.npz
    PYTHONPATH=/tmp/before/src .venv/bin/python -m bench.turned \\
        --save bench/.cache/turned_before.npz                # an older tree, for "before"
    .venv/bin/python -m bench.turned --compare bench/.cache/turned_before.npz \\
        bench/.cache/turned_after.npz                        # tracks identical or not

Per clip, each in a fresh process: faces, faces left out with their reason, spans not
re-rendered with theirs, the CNN's calls and seconds (0 where the tree has none), and
identify's CPU seconds. ``--save`` keeps every face's frames and landmarks: the quality
clips' landmarks identical before and after mean their renders are too (sync reads only
the session and the video).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import CACHE, CLIPS, MEDIA, run_child

TURNS = ["facerecognition__short_hamilton_clip.mp4", "vasp__combine001.mp4",
         "facenetpytorch__video.mp4"]

CHILD = r"""
import json, sys, time
import numpy as np
from lipdub.faces import models
models.preload()
import lipdub
import lipdub.faces.identify
from lipdub.faces import tracker
cnn = {"calls": 0, "s": 0.0}
if hasattr(tracker.FaceTracker, "_mmod_rois"):
    inner = tracker.FaceTracker._mmod_rois
    def timed(self, *a, **k):
        t = time.perf_counter()
        try:
            return inner(self, *a, **k)
        finally:
            cnn["calls"] += 1
            cnn["s"] += time.perf_counter() - t
    tracker.FaceTracker._mmod_rois = timed
c0 = time.process_time()
try:
    s = lipdub.identify(sys.argv[1])
    faces, unusable = s.faces, [u.to_json() for u in s.unusable]
except lipdub.NoFacesError as e:
    faces, unusable = [], [e.detail]
cpu = time.process_time() - c0
np.savez(sys.argv[2], **{f"{f.face_id}.{k}": v for f in faces
                         for k, v in (("frames", f.track.frames), ("lm", f.track.landmarks))})
print(json.dumps({"cpu": cpu, "cnn": cnn, "faces": len(faces), "unusable": unusable,
                  "spans": {f.face_id: [list(x) for x in getattr(f, "not_renderable", [])]
                            for f in faces}}))
"""


def run(save: Path | None) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    saved: dict[str, np.ndarray] = {}
    print(f"{'clip':42} {'faces':>5} {'cpu s':>6} {'cnn':>4} {'cnn s':>6}  reported")
    for name in [c for c, _ in CLIPS] + TURNS:
        tmp = CACHE / "turned_one.npz"
        r = run_child(CHILD, [str(MEDIA / name), str(tmp)], what=f"identify of {name}")
        with np.load(tmp) as z:
            saved.update({f"{name}/{k}": z[k] for k in z.files})
        said = [f"{u['reason']} {u['start_time']}-{u['end_time']} ms" if isinstance(u, dict)
                else u for u in r["unusable"]]
        said += [f"{fid} {a}-{b} ms {why}" for fid, spans in r["spans"].items()
                 for a, b, why in spans]
        print(f"{name:42} {r['faces']:5d} {r['cpu']:6.2f} {r['cnn']['calls']:4d} "
              f"{r['cnn']['s']:6.2f}  {'; '.join(said) or '-'}")
    if save is not None:
        np.savez_compressed(save, **saved)  # type: ignore[arg-type]


def compare(a: Path, b: Path) -> None:
    with np.load(a) as x, np.load(b) as y:
        for name in sorted({k.split("/")[0] for k in x.files} | {k.split("/")[0] for k in y.files}):
            ka = sorted(k for k in x.files if k.startswith(name + "/"))
            kb = sorted(k for k in y.files if k.startswith(name + "/"))
            if ka != kb:
                print(f"{name:42} faces differ: {len(ka) // 2} / {len(kb) // 2}")
                continue
            same = all(x[k].shape == y[k].shape and np.array_equal(x[k], y[k]) for k in ka)
            print(f"{name:42} {'identical tracks' if same else 'tracks differ'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--save", type=Path)
    p.add_argument("--compare", nargs=2, type=Path)
    args = p.parse_args()
    if args.compare:
        compare(*args.compare)
    else:
        run(args.save)


if __name__ == "__main__":
    main()

"""How well identify's faces and time spans match where faces really are.

    .venv/bin/python -m bench.spans

1. Faces that enter and leave mid-shot, where the truth is known: a real talking head
   (videoretalking__face_2) cut into a still 720p background from frame ``a`` to frame
   ``b``, at several phases against the detection cadence, 25 fps. Printed: the found
   span's first and last frame against the truth (negative: found late / ended early).
2. Real clips with several people (shared media), against an independent detector: dlib
   HOG on every frame at full size (upsampled once when the video is small, so faces of
   40 px count). Printed: the share of its detections that an identified face covers on
   that frame (recall; IoU >= 0.3 with the track's landmark box), and how many of its
   runs (a detection followed frame to frame) more than one face id covers (splits).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import av
import dlib

import lipdub
from bench._clips import MEDIA
from lipdub.faces.tracker import iou, landmark_box
from tests.mediagen import enters_and_leaves

HEAD = MEDIA / "videoretalking__face_2.mp4"
REAL = ["facerecognition__short_hamilton_clip.mp4", "vasp__combine001.mp4"]


def part_one() -> None:
    print("1. a face visible from frame a to frame b-1 (720p, 25 fps, 150 frames)")
    print(f"   {'a':>4s} {'b':>4s} | {'first':>5s} {'last':>5s} | {'start err':>9s} "
          f"{'end err':>7s} | faces")
    with tempfile.TemporaryDirectory() as tmp:
        for a, b in ((30, 105), (33, 108), (37, 112), (41, 116), (0, 150)):
            clip = enters_and_leaves(HEAD, Path(tmp) / f"in_{a}.mp4", a, b - 1, frames=150,
                                     size=(1280, 720))
            s = lipdub.identify(clip)
            frames = s.faces[0].track.frames
            first, last = int(frames[0]), int(frames[-1])
            print(f"   {a:4d} {b:4d} | {first:5d} {last:5d} | {a - first:9d} "
                  f"{last - (b - 1):7d} | {len(s.faces)}", flush=True)


def reference(path: Path) -> list[list[tuple[float, float, float, float]]]:
    det = dlib.get_frontal_face_detector()
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            gray = f.to_ndarray(format="gray")
            up = 1 if max(gray.shape) < 1000 else 0
            out.append([(float(d.left()), float(d.top()), float(d.right()), float(d.bottom()))
                        for d in det(gray, up)])
    return out


def part_two() -> None:
    print("\n2. real clips against dlib HOG on every frame at full size")
    print(f"   {'clip':42s} {'faces':>5s} {'ref dets':>8s} {'recall':>6s} {'runs':>5s} "
          f"{'split':>5s}")
    for name in REAL:
        path = MEDIA / name
        ref = reference(path)
        s = lipdub.identify(path)
        boxes: list[dict[str, tuple[float, ...]]] = [{} for _ in ref]
        for face in s.faces:
            for row, fr in enumerate(face.track.frames.tolist()):
                if fr < len(boxes):
                    boxes[fr][face.face_id] = landmark_box(face.track.landmarks[row])
        covered = total = 0
        runs: list[tuple[tuple[float, ...], set[str]]] = []  # open runs: last box, ids
        done: list[set[str]] = []
        for i, dets in enumerate(ref):
            nxt: list[tuple[tuple[float, ...], set[str]]] = []
            for d in dets:
                total += 1
                ids = {fid for fid, b in boxes[i].items() if iou(b, d) >= 0.3}
                covered += bool(ids)
                prev = max(runs, key=lambda r: iou(r[0], d), default=None)
                if prev is not None and iou(prev[0], d) >= 0.5:
                    runs.remove(prev)
                    nxt.append((d, prev[1] | ids))
                else:
                    nxt.append((d, ids))
            done += [r[1] for r in runs]
            runs = nxt
        done += [r[1] for r in runs]
        split = sum(len(r) > 1 for r in done)
        print(f"   {name:42s} {len(s.faces):5d} {total:8d} {covered / max(total, 1):6.2f} "
              f"{len(done):5d} {split:5d}", flush=True)


if __name__ == "__main__":
    part_one()
    part_two()

"""The landmark predictor on the frame itself against on a crop reduced to 200 px.

    .venv/bin/python -m bench.predictor_ab            # 720p, 1080p and 4K close-ups

For the first 300 frames of each speed clip (bench/_clips.speed_clip: a real talking head
filling the frame's height), the predictor runs on the same box three ways: the frame
itself ("full", what the tracker does now), a crop reduced to a 200 px face with
INTER_AREA (what it did before) and with INTER_LINEAR. The box follows the INTER_AREA
result from frame to frame (the tracker follows its own landmarks, with its own box
ratio), so all three see the same boxes and only the predictor's input differs. Printed:
milliseconds per face including the reduction, jitter (mean second difference over frames
of the stable points, nose and eyes, and of the lips, in inter-ocular distances: the
predictor's noise, not the motion) and the mean distance from the INTER_AREA result.
"""

from __future__ import annotations

import sys
import time

import cv2
import dlib
import numpy as np

from bench._clips import speed_clip
from lipdub.faces import models
from lipdub.faces.geometry import interocular
from lipdub.faces.tracker import _shape_array, landmark_box
from lipdub.media.video import iter_frames

FRAMES = 300
REDUCED_FACE_PX = 200.0


def run(height: int) -> None:
    pred = models.landmark_predictor()
    det = dlib.get_frontal_face_detector()  # this bench's own (a detector is per thread)
    ways = ("full", "area", "linear")
    out: dict[str, list[np.ndarray]] = {k: [] for k in ways}
    spent = dict.fromkeys(ways, 0.0)
    box = None
    side = 0.0
    for fr in iter_frames(speed_clip(height, 10, 1)):
        if fr.index >= FRAMES:
            break
        g = fr.gray
        if box is None:
            d = det(cv2.resize(g, None, fx=0.25, fy=0.25), 0)[0]
            box = (d.left() * 4, d.top() * 4, d.right() * 4, d.bottom() * 4)
        else:  # follow the face as the tracker does: the last landmarks' box
            box = landmark_box(out["area"][-1])
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0)
        s = min(1.0, REDUCED_FACE_PX / side)
        m = side * 0.25
        cx0, cy0 = int(max(x0 - m, 0)), int(max(y0 - m, 0))
        cx1, cy1 = int(min(x1 + m, g.shape[1])), int(min(y1 + m, g.shape[0]))
        for k in ways:
            t = time.perf_counter()
            if k == "full":
                lm = _shape_array(pred(g, dlib.rectangle(int(x0), int(y0), int(x1), int(y1))))
            else:
                interp = cv2.INTER_AREA if k == "area" else cv2.INTER_LINEAR
                crop = cv2.resize(g[cy0:cy1, cx0:cx1], None, fx=s, fy=s, interpolation=interp)
                r = dlib.rectangle(int((x0 - cx0) * s), int((y0 - cy0) * s),
                                   int((x1 - cx0) * s), int((y1 - cy0) * s))
                lm = _shape_array(pred(crop, r)) / s + np.array([cx0, cy0], np.float32)
            spent[k] += time.perf_counter() - t
            out[k].append(lm)
    ref = np.array(out["area"], np.float64)
    iod = float(np.median(interocular(ref)))
    print(f"{height}p, face {side:.0f} px, {len(ref)} frames")
    for k in ways:
        a = np.array(out[k], np.float64)
        jit = np.abs(a[2:] - 2 * a[1:-1] + a[:-2])
        stable = jit[:, np.r_[27:48]].mean() / iod
        lips = jit[:, 48:68].mean() / iod
        d = np.linalg.norm(a - ref, axis=2).mean() / iod
        print(f"  {k:7s} {1000 * spent[k] / len(a):5.2f} ms  jitter stable {stable:.4f} "
              f"lips {lips:.4f}  from area {d:.4f} IOD")


if __name__ == "__main__":
    for h in [int(x) for x in sys.argv[1:]] or [720, 1080, 2160]:
        run(h)

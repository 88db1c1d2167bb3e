"""A second landmark instrument, independent of lipdub's: MediaPipe's face mesh.

    .venv-mp/bin/python bench/mp_landmarks.py VIDEO OUT.npz [--x0 X0 --x1 X1]

Runs in its own virtual environment (``make bench-deps`` makes ``.venv-mp``): MediaPipe
brings its own OpenCV and protobuf, which must not meet lipdub's. It imports nothing of
lipdub, so what it measures owes nothing to the engine's tracker, smoothing or dlib model:
the renderer could fool dlib's 68 points (it picks and warps mouths by them), not a
different network trained on other data.

Every frame is searched on its own (static image mode): no tracking, no smoothing from
frame to frame, so a one-frame event in the video is a one-frame event here. Writes
``points`` (n_frames, 468, 2) in pixels of the full frame (NaN where no face was found).
"""

from __future__ import annotations

import argparse
import sys

import cv2
import mediapipe as mp
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--x0", type=int, default=None, help="keep only columns [x0, x1)")
    ap.add_argument("--x1", type=int, default=None)
    args = ap.parse_args()
    cap = cv2.VideoCapture(args.video)
    if not cap.isOpened():
        sys.exit(f"cannot open {args.video}")
    rows: list[np.ndarray] = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                         refine_landmarks=False,
                                         min_detection_confidence=0.3) as mesh:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            x0 = args.x0 or 0
            if args.x0 is not None:
                bgr = np.ascontiguousarray(bgr[:, args.x0 : args.x1])
            h, w = bgr.shape[:2]
            res = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if not res.multi_face_landmarks:
                rows.append(np.full((468, 2), np.nan, np.float32))
                continue
            lm = res.multi_face_landmarks[0].landmark
            pts = np.array([[p.x * w + x0, p.y * h] for p in lm[:468]], np.float32)
            rows.append(pts)
    np.savez_compressed(args.out, points=np.stack(rows) if rows
                        else np.zeros((0, 468, 2), np.float32))


if __name__ == "__main__":
    main()

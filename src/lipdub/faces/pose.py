"""Head pose (yaw, pitch, roll in degrees) from 68 landmarks with a generic 3D face."""

from __future__ import annotations

import cv2
import numpy as np

# A generic face in millimetres (nose tip at origin): nose tip, chin, eye outer corners,
# mouth corners. The classic six-point model; good enough to rank frontalness and to
# tell the renderer how the head is turned.
_MODEL = np.array(
    [
        (0.0, 0.0, 0.0),
        (0.0, -63.6, -12.5),
        (-43.3, 32.7, -26.0),
        (43.3, 32.7, -26.0),
        (-28.9, -28.9, -24.1),
        (28.9, -28.9, -24.1),
    ],
    dtype=np.float64,
)
_IDX = [30, 8, 36, 45, 48, 54]


def head_pose(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Return (yaw, pitch, roll) degrees; zeros when the solver fails."""
    pts = np.asarray(landmarks, dtype=np.float64)[_IDX]
    f = float(max(width, height))
    cam = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(_MODEL, pts, cam, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.zeros(3, np.float32)
    rot, _ = cv2.Rodrigues(rvec)
    # Image y points down and the model's y up: flip so that pitch/yaw read naturally.
    sy = float(np.hypot(rot[0, 0], rot[1, 0]))
    pitch = float(np.degrees(np.arctan2(rot[2, 1], rot[2, 2])))
    yaw = float(np.degrees(np.arctan2(-rot[2, 0], sy)))
    roll = float(np.degrees(np.arctan2(rot[1, 0], rot[0, 0])))
    pitch = (pitch + 360.0) % 360.0 - 180.0  # model y is up, image y is down
    # In-plane roll straight from the eye line is more reliable than the solver's.
    eye_l = np.asarray(landmarks)[36:42].mean(0)
    eye_r = np.asarray(landmarks)[42:48].mean(0)
    roll = float(np.degrees(np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])))
    return np.array([yaw, pitch, roll], dtype=np.float32)

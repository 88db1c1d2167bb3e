"""Turned heads: frames where a face is seen but its mouth cannot be re-rendered.

dlib's 68-point predictor was trained on faces up to about three-quarter view; past that
the far half of the mouth is hidden behind the cheek and the predictor still draws a
whole, symmetric mouth there, so a render would paint lips on the cheek. A frame is
turned when either

- the detection that found the face there was the turned-face detector's (HOG, whose
  filters are frontal and slightly turned, did not find it: faces.tracker), or
- the head pose from the landmarks says the yaw is past ``YAW_LIMIT``.

Frames between two detections take the turned flag of either one (the head turned
somewhere between them), and runs are grown and bridged as covered mouths are
(faces.occlusion.grow_spans): a head turning away passes through the limit over a frame
or two before a detection sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lipdub.faces.occlusion import grow_spans

# Degrees, as faces.pose estimates them from the landmarks (a generic 3D face: it reads
# vasp's left face, a three-quarter view with the whole mouth in sight, as 49-60, and a
# true profile, whose shape the predictor squeezes into a frontal one, as 35-45: so a
# profile is told by the detector, not by this). Past 60 the far corner of the mouth
# is behind the cheek.
YAW_LIMIT = 60.0


def turned_rows(tracks: Sequence[tuple[Sequence[int], Mapping[int, bool]]],
                frames: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Per row of a person's ``frames`` (their tracks' frames in order; ``pose`` (N, 3)):
    True where the head is turned too far for the mouth. ``tracks``: each track's frames
    and its detections (frame -> found only by the turned-face detector)."""
    by_detection = np.zeros(len(frames), bool)
    row = 0
    for track_frames, found in tracks:
        n = len(track_frames)
        flags = _between_detections(list(track_frames), found)
        by_detection[row:row + n] = flags
        row += n
    too_far = np.abs(pose[:, 0]) > YAW_LIMIT if len(pose) else np.zeros(len(frames), bool)
    return grow_spans(by_detection | too_far, frames)


def _between_detections(frames: list[int], found: Mapping[int, bool]) -> np.ndarray:
    """A track's rows: turned where the detection before or after the row was turned."""
    out = np.zeros(len(frames), bool)
    marks = sorted((f, t) for f, t in found.items() if frames and frames[0] <= f <= frames[-1])
    if not marks:
        return out
    at = np.asarray(frames)
    for (f0, t0), (f1, t1) in zip(marks[:-1], marks[1:], strict=True):
        if t0 or t1:
            out |= (at >= f0) & (at <= f1)
    first_f, first_t = marks[0]
    last_f, last_t = marks[-1]
    if first_t:
        out |= at <= first_f
    if last_t:
        out |= at >= last_f
    return out


def reason_spans(frames: np.ndarray, turned: np.ndarray, covered: np.ndarray,
                 times: np.ndarray, frame_ms: float) -> list[tuple[int, int, str]]:
    """The rows that cannot be re-rendered, as (start_ms, end_ms, reason) spans of
    consecutive frames with one reason: "turned" (first: a turned head's mouth is not
    looked at for a cover) or "mouth_covered"."""
    reason = np.where(turned, "turned", np.where(covered, "mouth_covered", ""))

    def t(i: int) -> float:
        return float(times[i]) if i < len(times) else i * frame_ms

    runs: list[list] = []  # [first frame, last frame, reason]
    for f, r in zip(frames.tolist(), reason.tolist(), strict=True):
        if not r:
            continue
        if runs and runs[-1][1] == f - 1 and runs[-1][2] == r:
            runs[-1][1] = f
        else:
            runs.append([f, f, r])
    return [(int(round(t(a))), int(round(t(b) + frame_ms)), str(r)) for a, b, r in runs]


__all__ = ["YAW_LIMIT", "reason_spans", "turned_rows"]

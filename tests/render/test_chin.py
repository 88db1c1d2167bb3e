"""A shut mouth pasted over an open jaw keeps the person's own chin (issue 20).

The engine is asked for lips together on every frame (as a long /m/ would). Where the
source's jaw hangs open, the bank's closed-mouth entries have their chin higher than the
frame's: pasted as they were, the frame's own chin showed under the entry's (a swollen,
doubled chin, a seam along the jaw). Measured on the output by a fresh landmark
detection: the chin stays where the source's was, while the lips do close.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import lipdub
from lipdub.faces.geometry import mouth_opening, mouth_width
from lipdub.render.engine import ClassicEngine, FaceJob
from tests.conftest import media
from tests.render.test_articulation import landmarks_of


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))


def test_closed_mouth_over_an_open_jaw_keeps_the_chin(tmp_path: Path) -> None:
    video = media("liveportrait__d20.mp4")  # his jaw drops far on open vowels
    src = landmarks_of(video)
    n = len(src)
    session = lipdub.identify(video)
    face = session.faces[0]
    k = len(session.frame_times_ms)
    width = float(np.median(mouth_width(face.track.landmarks)))
    job = FaceJob(face=face, target_open=np.zeros(k), target_width=np.full(k, width),
                  alpha=np.ones(k), target_closure=np.ones(k))
    out = tmp_path / "shut.mp4"
    ClassicEngine().render(video, session, [job], out, None, 48000, lambda _p: None)
    dub = landmarks_of(out)
    pairs = [(s, d) for s, d in zip(src, dub, strict=False) if s is not None and d is not None]
    assert len(pairs) > 0.8 * n
    s_lm = np.stack([p[0] for p in pairs])
    d_lm = np.stack([p[1] for p in pairs])
    s_open = mouth_opening(s_lm)
    # The frames where the source's jaw hangs open most.
    wide = s_open >= np.percentile(s_open, 80)
    iod = np.array([_iod(x) for x in s_lm])
    chin_shift = (s_lm[:, 8, 1] - d_lm[:, 8, 1]) / iod  # > 0: the output's chin is higher
    lips = mouth_opening(d_lm)
    # The mouth did close (the detector's shape prior reads closed lips over a long chin
    # as a little apart, hence not a tighter bound).
    assert np.median(lips[wide]) < 0.6 * np.median(s_open[wide])
    # Pasted with its own chin, the entry raised the chin by 0.18 IOD here (the old
    # engine fails this test with that figure); kept, it stays within the detector's and
    # the feather's play.
    assert np.median(chin_shift[wide]) < 0.1, (
        f"chin raised by {np.median(chin_shift[wide]):.3f} IOD where the jaw was open")
    assert np.percentile(np.abs(chin_shift[wide]), 90) < 0.15

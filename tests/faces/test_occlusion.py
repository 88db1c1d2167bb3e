"""A covered mouth is never painted over: a box over the lower face (a hand, a
microphone, a cup) is found by identify, reported, and left as it is by sync."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import lipdub
from tests.conftest import media
from tests.mediagen import write_video

HEAD = "videoretalking__face_2.mp4"
FIRST, LAST = 40, 70  # frames with the cover


def covered_clip(out: Path, colour: tuple[int, int, int]) -> tuple[Path, list[tuple]]:
    """The talking head with a flat box from the nose base to under the chin on frames
    FIRST..LAST; returns the clip and each frame's box."""
    with av.open(str(media(HEAD))) as c:
        heads = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    track = lipdub.identify(media(HEAD)).faces[0].track
    boxes: list[tuple] = []
    for i in range(len(heads)):
        row = track.index_of(i)
        if FIRST <= i <= LAST and row is not None:
            lm = track.landmarks[row]
            boxes.append((int(lm[3:14, 0].min()), int(lm[31:36, 1].mean()),
                          int(lm[3:14, 0].max()), int(lm[8, 1]) + 10))
        else:
            boxes.append(())

    def draw(i: int) -> np.ndarray:
        img = heads[i].copy()
        if boxes[i]:
            x0, y0, x1, y1 = boxes[i]
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)
        return img

    return write_video(out, len(heads), (844, 844), draw), boxes


@pytest.mark.parametrize("colour", [(150, 110, 90), (40, 40, 45)], ids=["skin", "dark"])
def test_a_covered_mouth_is_left_untouched(colour: tuple[int, int, int],
                                          tmp_path: Path) -> None:
    video, boxes = covered_clip(tmp_path / "covered.mp4", colour)
    session = lipdub.identify(video)
    face = session.faces[0]
    assert face.track.covered is not None
    covered = set(face.track.frames[face.track.covered].tolist())
    assert set(range(FIRST, LAST + 1)) <= covered  # every frame with the box
    assert len(covered) <= (LAST - FIRST + 1) + 8  # and little else
    (start, end), = face.mouth_covered
    assert start <= FIRST * 40 and end >= (LAST + 1) * 40
    out = tmp_path / "out.mp4"
    r = lipdub.sync(video, [lipdub.FaceAudio(face.face_id, media("videoretalking__audio_1.wav"),
                                             0, 4500, insert_ms=0)],
                    out_path=out, session=session)
    assert r.faces[0]["frames_changed"] > 40  # the rest of the clip is re-rendered
    with av.open(str(video)) as a, av.open(str(out)) as b:
        src = [f.to_ndarray(format="rgb24") for f in a.decode(a.streams.video[0])]
        dst = [f.to_ndarray(format="rgb24") for f in b.decode(b.streams.video[0])]
    for i in range(FIRST, LAST + 1):
        x0, y0, x1, y1 = boxes[i]
        # The box's inside (a margin in from its edges, where the encoder blurs it)
        inner = (slice(y0 + 4, y1 - 4), slice(x0 + 4, x1 - 4))
        diff = np.abs(dst[i][inner].astype(int) - src[i][inner].astype(int))
        assert diff.mean() < 2.0, f"frame {i}: the cover was painted over"
        assert (diff > 24).mean() < 0.01, f"frame {i}: lips on the cover"

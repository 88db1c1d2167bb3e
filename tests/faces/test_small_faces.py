"""Faces a person sees, not only large ones: a talking head 40-50 px wide in an HD frame,
a crowd walking toward the camera, and a clear account of what was searched and found."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import lipdub
from tests.conftest import media
from tests.mediagen import enters_and_leaves, write_video

HEAD = "videoretalking__face_2.mp4"  # 844 px square; the face is ~40 % of its width


def small_head(out: Path, size: tuple[int, int], tile: int, seconds: float = 3.0) -> Path:
    """The talking head scaled to a ``tile`` px square in a ``size`` frame of grey."""
    with av.open(str(media(HEAD))) as c:
        heads = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    w, h = size

    def draw(i: int) -> np.ndarray:
        img = np.full((h, w, 3), 90, np.uint8)
        y0, x0 = h // 2 - tile // 2, w // 3
        img[y0:y0 + tile, x0:x0 + tile] = cv2.resize(heads[i % len(heads)], (tile, tile),
                                                     interpolation=cv2.INTER_AREA)
        return img

    return write_video(out, int(seconds * 25), size, draw)


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_a_face_45_px_wide_in_an_hd_frame_is_found(size: tuple[int, int],
                                                    tmp_path: Path) -> None:
    """A 120 px tile: the face is ~45 px wide (the whole-frame search at 640 px sees faces
    from 160 px at 720p, 240 px at 1080p: this one was "no faces found")."""
    s = lipdub.identify(small_head(tmp_path / "small.mp4", size, 120))
    assert len(s.faces) == 1
    f = s.faces[0]
    width = float(np.median(f.track.boxes[:, 2] - f.track.boxes[:, 0]))
    assert 38 <= width <= 60
    assert f.segments == [(0, 3000)]  # found on the first frame and kept to the last


def test_the_crowd_clip_gives_faces() -> None:
    """1080p, people walking toward the camera, faces 60-100 px: was "no faces found"."""
    s = lipdub.identify(media("facenetpytorch__video.mp4"))
    assert len(s.faces) >= 3
    assert all(f.end_ms - f.start_ms >= 400 for f in s.faces)


def test_nothing_found_says_the_smallest_size_searched(tmp_path: Path) -> None:
    from tests.mediagen import no_faces

    with pytest.raises(lipdub.NoFacesError) as e:
        lipdub.identify(no_faces(tmp_path / "none.mp4"))
    assert "searched for faces down to 40 px wide in this 320x240 video" in e.value.detail


def test_a_face_seen_too_briefly_is_reported_with_its_span(tmp_path: Path) -> None:
    """Seen for 8 frames (320 ms, under the 400 ms a person needs): left out, and said."""
    video = enters_and_leaves(media(HEAD), tmp_path / "brief.mp4", 44, 51)
    with pytest.raises(lipdub.NoFacesError) as e:
        lipdub.identify(video)
    assert "found only a face too brief" in e.value.detail
    assert "1.76-2.08 s" in e.value.detail

"""Editing a face's window in the decoder's YUV planes: exact outside, faithful inside."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from lipdub.media.video import iter_frames
from lipdub.media.yuv import YuvPicture, align, editable
from tests.conftest import media


def _first(path: Path) -> av.VideoFrame:
    return next(iter(iter_frames(path, prefetch=0))).av_frame


def test_untouched_picture_is_the_decoders_own_frame() -> None:
    f = _first(media("videoretalking__face_3.mp4"))
    assert editable(f, 0)
    pic = YuvPicture(f)
    box = pic.window((101, 33, 301, 207))
    rgb = pic.rgb(box)
    pic.put(box, rgb, rgb.copy())  # nothing changed: nothing is copied
    assert pic.frame() is f


def test_window_matches_the_full_conversion() -> None:
    f = _first(media("videoretalking__face_2.mp4"))
    full = cv2.cvtColor(f.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
    pic = YuvPicture(f)
    box = pic.window((211, 303, 517, 611))
    x0, y0, x1, y1 = box
    assert box == (210, 302, 518, 612)  # grown to even corners
    np.testing.assert_array_equal(pic.rgb(box), full[y0:y1, x0:x1])


def test_edit_changes_only_what_was_drawn_and_round_trips() -> None:
    f = _first(media("videoretalking__face_2.mp4"))
    before_planes = f.to_ndarray(format="yuv420p").copy()
    h, w = f.height, f.width
    pic = YuvPicture(f)
    box = pic.window((300, 400, 500, 560))
    rgb = pic.rgb(box)
    before = rgb.copy()
    cv2.circle(rgb, (100, 80), 40, (200, 40, 40), -1)  # a red disc in the window
    pic.put(box, rgb, before)
    assert pic.changed
    after = pic.frame().to_ndarray(format="yuv420p")
    changed = after != before_planes
    # Luma: only inside the window, and only where the disc is.
    ys, xs = np.nonzero(changed[:h])
    assert ys.min() >= box[1] and ys.max() < box[3] and xs.min() >= box[0] and xs.max() < box[2]
    disc = np.zeros((h, w), bool)
    cv2.circle(disc.view(np.uint8), (box[0] + 100, box[1] + 80), 41, 1, -1)
    assert not (changed[:h] & ~disc).any()
    # The disc reads back red (chroma is shared by 2x2 pixels: look inside it).
    back = cv2.cvtColor(after, cv2.COLOR_YUV2RGB_I420)[box[1] + 80, box[0] + 100]
    assert np.abs(back.astype(int) - (200, 40, 40)).max() <= 6


def test_edits_never_reach_the_pictures_the_decoder_predicts_from() -> None:
    """Frames are edited in place where the decoder has let go of them, and copied first
    where it still holds them as references: a clip decoded with frame threads and edited
    as it streams decodes every later frame exactly as a clean decode does."""
    clip = media("videoretalking__face_2.mp4")
    clean = [fr.av_frame.to_ndarray(format="yuv420p").copy()
             for _, fr in zip(range(60), iter_frames(clip), strict=False)]
    box = (300, 400, 500, 560)
    edited = []
    for i, fr in zip(range(60), iter_frames(clip), strict=False):
        pic = YuvPicture(fr.av_frame)
        if i % 3 == 0:  # a white block over the window, every third frame
            rgb = pic.rgb(box)
            before = rgb.copy()
            rgb[:] = 255
            pic.put(box, rgb, before)
        edited.append(pic.frame().to_ndarray(format="yuv420p"))
    def planes(p: np.ndarray) -> list[np.ndarray]:
        h, w = p.shape[0] * 2 // 3, p.shape[1]
        c = p[h:].reshape(2, h // 2, w // 2)
        return [p[:h], c[0], c[1]]

    x0, y0, x1, y1 = box
    for i, (a, b) in enumerate(zip(clean, edited, strict=True)):
        if i % 3:
            np.testing.assert_array_equal(a, b, err_msg=f"frame {i}")
            continue
        for k, (pa, pb) in enumerate(zip(planes(a), planes(b), strict=True)):
            s = 1 if k == 0 else 2  # chroma is at half resolution
            outside = np.ones(pa.shape, bool)
            outside[y0 // s : y1 // s, x0 // s : x1 // s] = False
            np.testing.assert_array_equal(pa[outside], pb[outside], err_msg=f"frame {i}")
        assert (planes(b)[0][y0:y1, x0:x1] > 230).all()


def test_frames_the_planes_cannot_carry_take_the_rgb_path() -> None:
    f = av.VideoFrame.from_ndarray(np.zeros((64, 48, 3), np.uint8), format="rgb24")
    assert not editable(f, 0)
    y = av.VideoFrame.from_ndarray(np.zeros((96, 64), np.uint8), format="yuv420p")
    assert editable(y, 0) and not editable(y, 90)
    odd = av.VideoFrame(63, 64, "yuv420p")
    assert not editable(odd, 0)
    assert align((3, 5, 9, 11), 10, 10) == (2, 4, 10, 10)


def test_a_changed_block_gets_the_chroma_of_its_mean_colour() -> None:
    """Chroma covers 2x2 pixels: one red pixel of four tints the block a quarter red
    (OpenCV's own I420 conversion would take the top-left pixel's, grey)."""
    grey = np.full((16, 16, 3), 128, np.uint8)
    f = av.VideoFrame.from_ndarray(cv2.cvtColor(grey, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    pic = YuvPicture(f)
    box = (0, 0, 16, 16)
    rgb = pic.rgb(box)
    before = rgb.copy()
    rgb[5, 5] = (255, 0, 0)  # the bottom-right pixel of block (2, 2)
    pic.put(box, rgb, before)
    planes = pic.frame().to_ndarray(format="yuv420p")
    v = planes[16 + 4 :].reshape(-1)[2 * 8 + 2]  # V plane, row 2, column 2
    assert 128 + 10 < int(v) < 128 + 40  # a quarter of red's V offset (~+110)

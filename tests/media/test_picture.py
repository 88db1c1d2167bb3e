"""The picture as it was: the levels of 10-bit, 4:2:2, 4:4:4 and full-range sources, odd
sizes, the pixel shape and the colour tags survive decoding, re-rendering and encoding."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import lipdub
from lipdub.media.video import iter_frames, picture_tags, plain_frame, probe
from tests.conftest import media
from tests.media.variants import luma8, reencoded

CLIP = "videoretalking__face_2.mp4"

VARIANTS = {
    "h264-10bit": {"pix_fmt": "yuv420p10le"},
    "hevc-10bit": {"codec": "libx265", "pix_fmt": "yuv420p10le"},
    "422": {"pix_fmt": "yuv422p"},
    "444": {"pix_fmt": "yuv444p"},
    "full-range": {"pix_fmt": "yuv420p", "color_range": 2},
}


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_plain_frames_keep_the_sources_levels(kind: str, tmp_path: Path) -> None:
    v = reencoded(media(CLIP), tmp_path / f"{kind}.mp4", seconds=0.4, **VARIANTS[kind])
    raw = [f.av_frame for f in iter_frames(v, raw=True)]
    plain = list(iter_frames(v))
    assert len(raw) == len(plain) == 10
    for r, p in zip(raw, plain, strict=True):
        f = p.av_frame
        assert f.format.name == "yuv420p"
        assert f.color_range == (2 if kind == "full-range" else 1)
        diff = np.abs(luma8(r).astype(int) - p.gray.astype(int))
        # 8-bit luma is copied; 10-bit is rounded to the nearest level (one at most)
        assert diff.max() <= (1 if "10bit" in kind else 0)
        assert diff.mean() < 0.3


def test_odd_sides_are_padded_not_cropped(tmp_path: Path) -> None:
    v = reencoded(media(CLIP), tmp_path / "odd.mp4", seconds=0.2, pix_fmt="yuv444p",
                  size=(633, 843))
    fr = next(iter(iter_frames(v)))
    assert fr.size == (634, 844)
    g = fr.gray
    np.testing.assert_array_equal(g[:, 633], g[:, 632])
    np.testing.assert_array_equal(g[843], g[842])
    raw = next(iter(iter_frames(v, raw=True)))
    np.testing.assert_array_equal(g[:843, :633], luma8(raw.av_frame))


def test_a_rotated_frame_is_turned_in_its_planes() -> None:
    y = np.arange(8 * 6, dtype=np.uint8).reshape(8, 6)
    u = np.full((4, 3), 100, np.uint8)
    u[0, 0] = 7
    buf = np.concatenate([y.ravel(), u.ravel(), np.full(12, 140, np.uint8)])
    f = av.VideoFrame.from_ndarray(buf.reshape(12, 6), format="yuv420p")
    out = plain_frame(f, 90)
    assert (out.width, out.height) == (8, 6)
    a = out.to_ndarray()
    np.testing.assert_array_equal(a[:6], np.rot90(y, 1))
    assert a[6:].ravel()[: 12][np.rot90(u, 1).ravel() == 7].size == 1
    np.testing.assert_array_equal(a[6:].ravel()[:12].reshape(3, 4), np.rot90(u, 1))


@pytest.mark.parametrize("kind", ["anamorphic-full-444-10bit-601", "h264-10bit"])
def test_sync_keeps_geometry_colour_and_untouched_levels(kind: str, tmp_path: Path) -> None:
    """Anamorphic (pixels 4:3 wide), full range, BT.601 tags, 4:4:4 10-bit, an odd width:
    the output plays at the source's display aspect with its tags, and the pixels away
    from the face keep the source's levels (no shift; only the encoder's own loss)."""
    if kind == "h264-10bit":
        v = reencoded(media(CLIP), tmp_path / "v.mp4", seconds=1.2, pix_fmt="yuv420p10le")
    else:
        v = reencoded(media(CLIP), tmp_path / "v.mp4", seconds=1.2, pix_fmt="yuv444p10le",
                      color_range=2, colorspace=6, color_primaries=6, color_trc=6,
                      size=(635, 844), sample_aspect=Fraction(4, 3))
    session = lipdub.identify(v)
    out = tmp_path / "out.mp4"
    lipdub.sync(v, [lipdub.FaceAudio(session.faces[0].face_id,
                                     media("videoretalking__audio_1.wav"), 0, 1000,
                                     insert_ms=100)], out_path=out, session=session)
    src_info, out_info = probe(v), probe(out)
    assert out_info.frame_count == src_info.frame_count
    assert out_info.sample_aspect == src_info.sample_aspect
    assert out_info.width == src_info.width + src_info.width % 2  # padded, never cropped
    assert out_info.display_size[0] == pytest.approx(src_info.display_size[0], abs=2)
    assert picture_tags(out) == picture_tags(v)
    with av.open(str(v)) as a, av.open(str(out)) as b:
        src = [luma8(f) for f in a.decode(a.streams.video[0])]
        dst = [luma8(f) for f in b.decode(b.streams.video[0])]
    errors = []
    for x, y in zip(src, dst, strict=True):
        h, w = x.shape
        away = np.ones((h, w), bool)
        away[h // 4 :, w // 6 : 5 * w // 6] = False  # the lower face and what is around it
        errors.append(y[:h, :w][away].astype(np.float64) - x[away])
    e = np.concatenate(errors)
    assert abs(e.mean()) < 0.3  # was 0.7-0.9 levels through RGB
    assert 10 * np.log10(255**2 / np.mean(e**2)) > 48  # was 44 dB; a plain source: 51.6

"""The lower-face crops identify keeps for the renderer's bank."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import lipdub
from lipdub.faces.crops import _TrackPool
from lipdub.faces.identify import IdentifySettings
from lipdub.media.video import iter_frames
from tests.conftest import media


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> lipdub.Session:
    out = tmp_path_factory.mktemp("crops") / "session"
    lipdub.identify(media("infinitetalk__ref_video.mp4"), out_dir=out)
    return lipdub.Session.load(out)


def test_identify_keeps_a_bank_of_crops_that_survives_save_and_load(
        saved: lipdub.Session) -> None:
    face = saved.faces[0]
    crops = face.crops
    assert crops is not None
    assert 200 <= len(crops) <= 240  # 375 frames: the bank's cap, not every frame
    assert np.all(np.diff(crops.frames) > 0)
    assert np.isin(crops.frames, face.track.frames).all()
    # The range is covered: the most open mouth of the track is among them (or next to it).
    from lipdub.faces.geometry import mouth_opening
    op = mouth_opening(face.track.landmarks)
    kept = np.isin(face.track.frames, crops.frames)
    assert op[kept].max() >= 0.95 * op.max()
    assert (saved.directory / "crops.npz").is_file()  # type: ignore[operator]


def test_crops_are_the_frames_pixels(saved: lipdub.Session) -> None:
    """Each crop, mapped back through its geometry, is the frame's own picture."""
    crops = saved.faces[0].crops
    assert crops is not None
    want = {int(crops.frames[k]): k for k in (0, len(crops) // 2, len(crops) - 1)}
    for fr in iter_frames(media("infinitetalk__ref_video.mp4")):
        k = want.get(fr.index)
        if k is None:
            continue
        img = crops.image(k)
        m = crops.to_frame(k)
        h, w = img.shape[:2]
        back = cv2.warpAffine(fr.rgb, np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2], (w, h),
                              flags=cv2.INTER_AREA)
        mse = float(np.mean((back.astype(np.float32) - img.astype(np.float32)) ** 2))
        assert 10 * np.log10(255**2 / mse) > 37, fr.index


def test_sessions_without_crops_still_sync(tmp_path: Path) -> None:
    """A session made before crops were kept (or with them off): the renderer decodes."""
    video = media("videoretalking__face_3.mp4")
    session = lipdub.identify(video, settings=IdentifySettings(keep_crops=False),
                              out_dir=tmp_path / "s")
    assert session.faces[0].crops is None
    assert not (tmp_path / "s" / "crops.npz").exists()
    r = lipdub.sync(video, [lipdub.FaceAudio("face_001", media("videoretalking__audio_1.wav"))],
                    out_path=tmp_path / "out.mp4", session=lipdub.Session.load(tmp_path / "s"))
    assert r.frame_count > 100 and r.faces[0]["bank_entries"] > 50


def test_pool_stays_bounded_on_a_long_track() -> None:
    """Crops are kept on a stride that doubles: memory does not grow with the track."""
    pool = _TrackPool(cap=40)
    rng = np.random.default_rng(0)
    for f in range(5000):
        op = float(rng.random())
        if pool.wants(f, op):
            pool.add(f, op, None)  # type: ignore[arg-type]
        assert len(pool.items) <= 2 * 40 + 40 // 8 + 40 // 16 + 1
    frames = sorted(pool.items)
    assert frames[0] == 0 and frames[-1] > 4000  # it still spans the whole track


def test_saving_a_session_without_crops_removes_stale_ones(saved: lipdub.Session,
                                                          tmp_path: Path) -> None:
    import shutil
    from dataclasses import replace
    d = tmp_path / "s"
    shutil.copytree(saved.directory, d)  # type: ignore[arg-type]
    assert (d / "crops.npz").is_file()
    bare = replace(saved, faces=[replace(f, crops=None) for f in saved.faces])
    bare.save(d)
    assert not (d / "crops.npz").exists()
    assert lipdub.Session.load(d).faces[0].crops is None

"""The exemplar bank from identify's crops: no second decode, the same appearances."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import lipdub
from lipdub.render.engine import ClassicEngine
from tests.conftest import media

VIDEO = "videoretalking__face_2.mp4"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> lipdub.Session:
    out = tmp_path_factory.mktemp("bank") / "s"
    lipdub.identify(media(VIDEO), out_dir=out)
    return lipdub.Session.load(out)


def test_bank_from_crops_reads_no_video(session: lipdub.Session) -> None:
    face = session.faces[0]
    assert face.crops is not None
    bank = ClassicEngine()._banks(Path("/nonexistent/video.mp4"), [face],
                                  lambda _f: None)[0]
    assert len(bank) == len(face.crops)
    np.testing.assert_array_equal(bank.frames, np.flatnonzero(
        np.isin(face.track.frames, face.crops.frames)))


def test_bank_from_crops_looks_like_the_bank_from_the_video(session: lipdub.Session) -> None:
    face = session.faces[0]
    from_crops = ClassicEngine()._banks(media(VIDEO), [face], lambda _f: None)[0]
    decoded = ClassicEngine()._banks(media(VIDEO), [replace(face, crops=None)],
                                     lambda _f: None)[0]
    same = np.intersect1d(from_crops.frames, decoded.frames)
    assert len(same) > 50
    a = from_crops.patches[np.searchsorted(from_crops.frames, same)].astype(np.float32)
    b = decoded.patches[np.searchsorted(decoded.frames, same)].astype(np.float32)
    # Same place (geometry), same look (JPEG at quality 95 of a working-resolution crop).
    psnr = 10 * np.log10(255**2 / float(np.mean((a - b) ** 2)))
    assert psnr > 40, psnr
    np.testing.assert_allclose(from_crops.opening[np.searchsorted(from_crops.frames, same)],
                               decoded.opening[np.searchsorted(decoded.frames, same)])


def test_a_failed_sync_abandons_the_bank_it_began(session: lipdub.Session,
                                                  tmp_path: Path) -> None:
    """The bank starts building before the audio is checked; a bad request stops it."""
    import threading
    import time

    from lipdub.errors import InputError

    before = {t.ident for t in threading.enumerate()}
    eng = ClassicEngine()
    face = replace(session.faces[0], crops=None)  # the slow path: a decode of the video
    with pytest.raises(InputError):
        eng.begin(media(VIDEO), [face])
        lipdub.sync(media(VIDEO), [lipdub.FaceAudio(face.face_id, media(
            "videoretalking__audio_1.wav"), insert_ms=60_000)], out_path=tmp_path / "o.mp4",
            session=replace(session, faces=[face]), engine=eng)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            t.name.startswith("lipdub-bank") and t.ident not in before
            for t in threading.enumerate()):
        time.sleep(0.05)
    assert not any(t.name.startswith("lipdub-bank") and t.ident not in before
                   for t in threading.enumerate())
    assert eng._early is None


def test_a_bank_holds_only_the_frames_it_was_given(session: lipdub.Session) -> None:
    """Patches are warped into slots reserved in advance: a frame given twice is taken
    once, and a wanted frame that never came leaves no unwritten slot in the bank."""
    from lipdub.render.bank import BankBuilder

    face = session.faces[0]
    crops = face.crops
    assert crops is not None and len(crops) > 4
    tr = face.track
    b = BankBuilder(tr.landmarks, tr.frames, tr.pose, only=crops.frames)
    given = [k for k in range(len(crops)) if k != 2]  # the third crop never arrives
    for k in given + [0]:  # ... and the first arrives twice
        b.add(int(crops.frames[k]), crops.image(k), crops.to_frame(k))
    bank = b.build()
    rows = np.flatnonzero(np.isin(tr.frames, crops.frames[given]))
    np.testing.assert_array_equal(bank.frames, rows)
    full = ClassicEngine()._banks(Path("/nonexistent/video.mp4"), [face], lambda _f: None)[0]
    keep = np.isin(full.frames, rows)
    np.testing.assert_array_equal(bank.patches, full.patches[keep])

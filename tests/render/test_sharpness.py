"""A pasted mouth is as sharp as the frame's own, whatever the frame's own mouth showed
(issue 20: lip sharpness 0.9-1.2x the source's, not boosted).

The compositor gives back, by an unsharp mask, what resampling took from a bank entry.
It used to solve the amount on the lips, the frame's and the entry's: where the frame's
own mouth showed teeth or a dark lip line (more Laplacian energy than lips alone, and
none of it left once the entry covers it), the pasted lips were sharpened to that, crisp
lips on a soft face. Here the same entry is pasted into the same real frame twice, once
as it is and once with teeth painted into its mouth, where the entry then covers them:
the output lips must come out equally sharp. And on frames the bank holds (which
calibrate the amount on one and the same mouth) the pasted lips are as sharp as the
frame's own.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import lipdub
from lipdub.faces.geometry import mouth_opening
from lipdub.faces.tracker import Track
from lipdub.render.bank import Bank, BankBuilder
from lipdub.render.compose import Compositor
from lipdub.render.engine import _Guarded
from lipdub.render.targets import render_targets
from tests.conftest import media
from tests.render.test_sync import frames_of


def lapvar(rgb: np.ndarray, mask: np.ndarray, ksize: int) -> float:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(g, cv2.CV_32F, ksize=ksize)[mask].var())


def lips_of(shape: tuple[int, ...], lm: np.ndarray) -> np.ndarray:
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(lm[48:60]).astype(np.int32)], 1)
    return m.astype(bool)


def with_teeth(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The frame with its mouth painted open: a dark interior across the lips, upper
    teeth as a white band."""
    out = rgb.copy()
    cv2.fillPoly(out, [np.round(lm[48:60]).astype(np.int32)], (40, 20, 20))
    y0, y1 = lm[48:60, 1].min(), lm[48:60, 1].max()
    band = lips_of(rgb.shape, lm)
    rows = np.arange(rgb.shape[0])[:, None]
    band &= (rows >= y0 + 0.25 * (y1 - y0)) & (rows <= y0 + 0.5 * (y1 - y0))
    out[band] = (235, 235, 225)
    return out


@pytest.fixture(scope="module")
def track() -> Track:
    return lipdub.identify(media("videoretalking__face_3.mp4")).faces[0].track


@pytest.fixture(scope="module")
def face(track: Track) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, Bank]:
    frames = frames_of(media("videoretalking__face_3.mp4"))
    n = min(len(frames), int(track.frames[-1]) + 1)
    builder = BankBuilder(track.landmarks, track.frames, track.pose, cap=60)
    for i in range(n):
        if builder.wants(i):
            builder.add(i, frames[i])
    return frames, track.frames, track.landmarks, builder.build()


def test_pasted_lips_ignore_what_the_frames_mouth_showed(face) -> None:  # type: ignore[no-untyped-def]
    frames, frame_of_row, landmarks, bank = face
    entry = int(np.argmin(bank.opening))  # shut lips
    own_row = int(bank.frames[entry])
    # Frames whose own lips are nearly shut too, so that the entry covers their mouth.
    rows = [int(r) for r in np.argsort(mouth_opening(landmarks)) if abs(int(r) - own_row) > 5][:4]
    plain, painted, frame_lips = [], [], []
    for r in rows:
        f = int(frame_of_row[r])
        lm = landmarks[r]
        inside = lips_of(frames[f].shape, lm)
        for img, out_list in ((frames[f], plain), (with_teeth(frames[f], lm), painted)):
            out = img.copy()
            assert Compositor(bank).render(out, lm, entry, 1.0, float(bank.opening[entry]))
            out_list.append([lapvar(out, inside, k) for k in (1, 3)])
        frame_lips.append([lapvar(frames[f], inside, k) for k in (1, 3)])
    plain_a, painted_a, src_a = np.array(plain), np.array(painted), np.array(frame_lips)
    # The old compositor sharpened the entry to the painted teeth: 1.5-3x here.
    ratio = np.median(painted_a / plain_a, axis=0)
    assert np.all((ratio > 0.9) & (ratio < 1.1)), f"painted / plain lip sharpness {ratio}"
    # As sharp as the frame's own shut lips: not boosted, not blurred.
    own = np.median(plain_a / src_a, axis=0)
    assert np.all((own > 0.8) & (own < 1.2)), f"pasted / frame's lip sharpness {own}"


def test_calibrated_on_a_frame_the_bank_holds(face) -> None:  # type: ignore[no-untyped-def]
    """A frame the bank holds calibrates the sharpening (its own entry pasted back where
    it came from); the amount is held for the frames after it. A mouth pasted there with
    that amount comes out as sharp as the frame's own, neither crisper nor softer, by
    either Laplacian (entries differ among themselves, so each frame gets its own entry
    here: what is measured is what the resampling took and the mask gave back)."""
    frames, frame_of_row, landmarks, bank = face
    rows = [int(r) for r in bank.frames]
    ratios = []
    for k in range(0, len(rows) - 1, max(1, len(rows) // 6)):
        comp = Compositor(bank)
        for j, own in ((k, k), (k + 1, None)):  # calibrated, then held
            r = rows[j]
            f = int(frame_of_row[r])
            out = frames[f].copy()
            assert comp.render(out, landmarks[r], j, 1.0, float(bank.opening[j]), own=own)
            inside = lips_of(out.shape, landmarks[r])
            ratios.append([lapvar(out, inside, q) / lapvar(frames[f], inside, q)
                           for q in (1, 3)])
    ratio = np.median(np.array(ratios), axis=0)
    assert np.all((ratio > 0.9) & (ratio < 1.1)), f"pasted / frame's lip sharpness {ratio}"


def test_a_track_that_starts_late_calibrates_on_its_own_frame(face, track) -> None:  # type: ignore[no-untyped-def]
    """The engine hands the compositor the entry taken from the frame being rendered. A
    bank keeps track rows, and on a track that starts late (a face that enters after the
    first frame) a row is not a frame number: looked up by frame number, the entry of a
    frame further on (another mouth) set the sharpening."""
    frames = face[0]
    skip = 12  # the face as if it entered at frame 12: row r is frame r + 12
    lms, fr = track.landmarks[skip:], track.frames[skip:]
    builder = BankBuilder(lms, fr, track.pose[skip:], cap=60)
    for i in range(min(len(frames), int(fr[-1]) + 1)):
        if builder.wants(i):
            builder.add(i, frames[i])
    bank = builder.build()
    targets = render_targets(lms, fr, bank.canonical.template)
    origin = np.zeros(2)
    checked = 0
    for k in range(len(bank) // 3, len(bank), max(1, len(bank) // 5)):
        row = int(bank.frames[k])
        f, lm = int(fr[row]), targets.landmarks[row]
        assert f == row + skip
        want_open, want_width = float(bank.opening[k]), float(bank.width[k])
        got = frames[f].copy()
        _Guarded(Compositor(bank), "face", targets).render(
            got, None, f, row, lm, origin, k, 1.0, want_open, want_width)
        renders = {}
        for own in (k, None):
            out = frames[f].copy()
            assert Compositor(bank).render(out, lm, k, 1.0, want_open, want_width,
                                           targets.to_canonical_at(row, origin), own=own)
            renders[own] = out
        assert not np.array_equal(renders[k], renders[None])  # calibration shows here
        np.testing.assert_array_equal(got, renders[k])
        checked += 1
    assert checked >= 3


def test_the_first_frame_the_bank_holds_calibrates(face) -> None:  # type: ignore[no-untyped-def]
    """Frames the bank does not hold come first (the sharpening falls back to what the
    warp alone takes), then one it holds: that frame calibrates at once. The solve used
    to run on every fourth frame counted from the first, and a held frame between two
    solves was passed over (on a bank that holds every fourth frame, all of them)."""
    frames, frame_of_row, landmarks, bank = face
    k = len(bank) // 2
    row = int(bank.frames[k])
    rows = [r for r in range(row - 3, row) if r not in set(int(x) for x in bank.frames)]
    assert rows, "the frames before the entry's are in the bank too: pick another entry"
    comp = Compositor(bank)
    for r in rows[-1:]:  # one frame the bank does not hold, then the entry's own
        assert comp.render(frames[int(frame_of_row[r])].copy(), landmarks[r], k, 1.0,
                           float(bank.opening[k]))
    fallback = comp.sharpening
    f = int(frame_of_row[row])
    fresh = Compositor(bank)
    for c in (comp, fresh):
        assert c.render(frames[f].copy(), landmarks[row], k, 1.0, float(bank.opening[k]), own=k)
    assert fresh.sharpening != fallback  # the calibration shows here
    assert comp.sharpening == fresh.sharpening

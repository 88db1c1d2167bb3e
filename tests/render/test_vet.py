"""vet: bank entries with occluders, blur or a sheared alignment are rejected and clean ones
kept; smeared patches fail check_patch while real frames pass; sheared frame transforms and
jumping landmarks are implausible; match_sharpness restores what resampling took."""

from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np
import pytest

import lipdub
from lipdub.faces.geometry import interocular
from lipdub.render.bank import STABLE, similarity_to_canonical
from lipdub.render.entries import lapvar, score_entries, vet_entries
from lipdub.render.patch_check import check_patch, roi_box
from lipdub.render.sharpness import match_sharpness
from lipdub.render.targets import (
    plausible_target,
    plausible_targets,
    plausible_transform,
    render_targets,
    transform_distortion,
)
from tests.conftest import media

VIDEO = "vasp__combine001.mp4"  # three panels of 224 px; the woman in the middle is used


@dataclass
class Clip:
    frames: list[np.ndarray]  # RGB
    landmarks: np.ndarray  # (N, 68, 2) per video frame
    pose: np.ndarray  # (N, 3)
    template: np.ndarray  # canonical template
    patches: np.ndarray  # (N, H, W, 3) canonical patches (similarity-aligned)
    canon_lm: np.ndarray  # (N, 68, 2)


@pytest.fixture(scope="module")
def clip() -> Clip:
    path = media(VIDEO)
    session = lipdub.identify(path)
    middle = [f for f in session.faces
              if 224 < float(np.median(f.track.boxes[:, 0] + f.track.boxes[:, 2])) / 2 < 448]
    assert len(middle) == 1
    tr = middle[0].track
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    n = min(len(frames), int(tr.frames[-1]) + 1)
    assert np.array_equal(tr.frames[:n], np.arange(n)), "the middle face is visible throughout"
    lms = tr.landmarks[:n].astype(np.float64)
    # A canonical frame like the bank's: mean shape under a similarity, with margins.
    ref = lms[n // 2]
    aligned = []
    for x in lms:
        m = similarity_to_canonical(x, ref)
        aligned.append(x @ m[:, :2].T + m[:, 2])
    mean = np.mean(aligned, axis=0)
    lo, hi = mean.min(0), mean.max(0)
    w, h = hi - lo
    template = mean - (lo - (0.2 * w, 0.1 * h))
    size = (int(np.ceil(w * 1.4)), int(np.ceil(h * 1.45)))
    patches, canon = [], []
    for i in range(n):
        m = similarity_to_canonical(lms[i], template)
        patches.append(cv2.warpAffine(frames[i], m, size, flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE))
        canon.append(lms[i] @ m[:, :2].T + m[:, 2])
    return Clip(frames[:n], lms, tr.pose[:n].astype(np.float64), template.astype(np.float32),
                np.stack(patches), np.stack(canon).astype(np.float32))


def _lower_face_ellipse(lm: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """Centre and axes of an ellipse over mouth and chin (a hand, a microphone)."""
    c = (lm[48:60].mean(0) + lm[8]) / 2
    iod = float(interocular(lm))
    return (int(c[0]), int(c[1])), (int(0.75 * iod), int(0.55 * iod))


def _skin(patch: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Mean colour of the cheek under the eye: what a hand over the mouth would look like."""
    iod = float(interocular(lm))
    c = lm[36:42].mean(0) + (0, 0.55 * iod)
    r = max(2, int(0.12 * iod))
    y, x = int(c[1]), int(c[0])
    return patch[y - r:y + r, x - r:x + r].reshape(-1, 3).mean(0)


def _shear_about(img: np.ndarray, centre: np.ndarray, shear: float,
                 squash: float) -> np.ndarray:
    """The vasp failure in miniature: a sheared, squashed affine about ``centre``."""
    a = np.array([[1.0, shear], [0.0, squash]])
    t = centre - a @ centre
    m = np.hstack([a, t[:, None]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


# ------------------------------------------------------------------ bank entries


def test_clean_entries_are_kept(clip: Clip) -> None:
    keep = vet_entries(clip.patches, clip.canon_lm, clip.template, clip.pose)
    assert keep.mean() >= 0.9


@pytest.mark.parametrize("kind", ["skin blob", "grey block", "motion blur", "sheared"])
def test_bad_entries_are_rejected(clip: Clip, kind: str) -> None:
    patches = clip.patches.copy()
    lms = clip.canon_lm.copy()
    bad = [10, 30, 50]
    for k in bad:
        p, lm = patches[k], lms[k]
        centre, axes = _lower_face_ellipse(lm)
        if kind == "skin blob":
            cv2.ellipse(p, centre, axes, -20, 0, 360, _skin(p, lm).tolist(), -1)
            p[:] = cv2.GaussianBlur(p, (0, 0), 1.0)  # no hard edges: only the colour tells
        elif kind == "grey block":
            # A card over chin and cheeks. The vet leaves each entry's own lips out, so
            # over a wide-open mouth a block the size of the blob above leaves about 15 %
            # of the measured region flagged, as much as some clean entries of this clip
            # show: the vet cannot tell those apart (a known limit, in the notes).
            big = (int(axes[0] * 1.25), int(axes[1] * 1.25))
            cv2.ellipse(p, centre, big, 0, 0, 360, (128, 128, 128), -1)
        elif kind == "motion blur":
            kern = np.zeros((15, 15), np.float32)
            kern[7, :] = 1.0 / 15
            p[:] = cv2.filter2D(p, -1, kern, borderType=cv2.BORDER_REPLICATE)
        else:
            c = lm[STABLE].mean(0).astype(np.float64)
            p[:] = _shear_about(p, c, 0.35, 0.65)
            a = np.array([[1.0, 0.35], [0.0, 0.65]])
            lms[k] = ((lm - c) @ a.T + c).astype(np.float32)
    scores = score_entries(patches, lms, clip.template, clip.pose)
    keep = vet_entries(patches, lms, clip.template, clip.pose, scores=scores)
    assert not keep[bad].any(), [scores.reason(k) for k in bad]
    clean = np.setdiff1d(np.arange(len(keep)), bad)
    assert keep[clean].mean() >= 0.9


def test_vetting_never_empties_the_bank(clip: Clip) -> None:
    patches = clip.patches.copy()
    for k in range(len(patches)):
        if k % 4:  # three quarters of the bank behind a grey block
            centre, axes = _lower_face_ellipse(clip.canon_lm[k])
            cv2.ellipse(patches[k], centre, axes, 0, 0, 360, (128, 128, 128), -1)
    keep = vet_entries(patches, clip.canon_lm, clip.template, clip.pose, keep_at_least=0.5)
    assert keep.mean() >= 0.5


# ------------------------------------------------------------------ rendered patches


def _roi(clip: Clip, f: int, img: np.ndarray | None = None) -> np.ndarray:
    x0, y0, x1, y1 = roi_box(clip.landmarks[f], clip.frames[f].shape)
    return (clip.frames[f] if img is None else img)[y0:y1, x0:x1]


def _mask(clip: Clip, f: int) -> np.ndarray:
    """Blend mask like the compositor's: the lower face, feathered."""
    lm = clip.landmarks[f]
    x0, y0, x1, y1 = roi_box(lm, clip.frames[f].shape)
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.concatenate([lm[3:14], lm[31:36]]) - (x0, y0)
    cv2.fillConvexPoly(m, cv2.convexHull(pts.astype(np.int32)), 255)
    return cv2.GaussianBlur(m.astype(np.float32) / 255, (0, 0), 3.0)


def _lips(clip: Clip, f: int) -> np.ndarray:
    x0, y0, _, _ = roi_box(clip.landmarks[f], clip.frames[f].shape)
    return clip.landmarks[f][48:68] - (x0, y0)


@pytest.mark.parametrize("f", [20, 45, 61, 90])
def test_a_real_neighbouring_frame_passes(clip: Clip, f: int) -> None:
    # The next source frame, shown where frame f was: the kind of change a dub makes.
    ok, why = check_patch(_roi(clip, f + 1), _roi(clip, f), _roi(clip, f - 1), _mask(clip, f),
                          prev_source_roi=_roi(clip, f - 1), lips=_lips(clip, f))
    assert ok, why


@pytest.mark.parametrize("kind", ["shear smear", "skin blob", "colour"])
@pytest.mark.parametrize("f", [20, 61])
@pytest.mark.parametrize("wider", [False, True])
def test_a_smeared_patch_fails(clip: Clip, f: int, kind: str, wider: bool) -> None:
    """... also when the pasted mouth is wider than the frame's own (its lips, which the
    structure check leaves out with the frame's, reach 15 % past each corner)."""
    src = _roi(clip, f)
    lm = clip.landmarks[f]
    x0, y0, _, _ = roi_box(lm, clip.frames[f].shape)
    mask = _mask(clip, f)
    if kind == "shear smear":
        # The entry warped through a sheared transform (vasp frames 62-64).
        bad = _shear_about(src, lm[STABLE].mean(0) - (x0, y0), 0.45, 0.6)
    elif kind == "skin blob":
        # A hand over mouth, chin and cheeks. (One confined to the mouth cannot be told
        # from closed lips here; occluded bank entries are the bank vetting's job.)
        bad = src.copy()
        (cx, cy), (ax, ay) = _lower_face_ellipse(lm)
        axes = (int(1.4 * ax), int(1.3 * ay))
        cv2.ellipse(bad, (cx - x0, cy - y0), axes, -20, 0, 360,
                    (_skin(clip.frames[f], lm) * 1.15).tolist(), -1)
    else:
        bad = np.clip(src * np.array([1.35, 1.0, 0.8]), 0, 255).astype(np.uint8)
    blended = (src * (1 - mask[..., None]) + bad * mask[..., None]).astype(np.uint8)
    lips = _lips(clip, f)
    new_lips = None
    if wider:
        c = lips.mean(axis=0)
        new_lips = c + (lips - c) * np.array([1.3, 1.0])
    ok, why = check_patch(blended, src, _roi(clip, f - 1), mask,
                          prev_source_roi=_roi(clip, f - 1), lips=lips, new_lips=new_lips)
    assert not ok
    assert why


def test_a_sudden_jump_fails_even_when_the_source_is_matched(clip: Clip) -> None:
    f = 40
    src, prev = _roi(clip, f), _roi(clip, f - 1)
    mask = _mask(clip, f)
    # Previous output was a different (darker) appearance; now back to the source: a flash.
    prev_out = (prev * 0.7).astype(np.uint8)
    ok, why = check_patch(src, src, prev_out, mask, prev_source_roi=prev, lips=_lips(clip, f))
    assert not ok and why.startswith("jump")


# ------------------------------------------------------------------ target alignment


def test_sheared_transforms_are_implausible() -> None:
    similarity = np.array([[0.9, -0.2, 5.0], [0.2, 0.9, 3.0]])
    assert plausible_transform(similarity)
    assert transform_distortion(similarity)[0] == pytest.approx(1.0)
    # What LMEDS returned for vasp frame 62: singular values 0.97 / 0.64, axes 73 degrees.
    u = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    sheared = np.hstack([u @ np.array([[0.97, 0.3], [0.0, 0.64]]), np.zeros((2, 1))])
    assert not plausible_transform(sheared)


def test_target_landmarks(clip: Clip) -> None:
    f = 30
    lm = clip.landmarks[f]
    assert plausible_target(lm, clip.landmarks[f - 1], clip.template,
                            transform=similarity_to_canonical(lm, clip.template))
    broken = lm.copy()
    iod = float(interocular(lm))
    broken[2:15] += (0.0, 0.6 * iod)  # the jaw slid down the neck: a tracker failure
    assert not plausible_target(broken, clip.landmarks[f - 1], clip.template)
    m = similarity_to_canonical(lm, clip.template)
    a = np.array([[1.0, 0.4], [0.0, 0.6]])
    assert not plausible_target(lm, None, clip.template,
                                transform=np.hstack([a @ m[:, :2], m[:, 2:]]))


def test_a_track_readied_ahead_is_judged_as_frame_by_frame(clip: Clip) -> None:
    """The render checks a whole track before its first frame (vectorised): every row must
    get the verdict the frame-by-frame check gives, broken rows included, and its
    alignment, moved to a window's pixels, must be the one fitted in that window."""
    lms = clip.landmarks.copy()
    iod = float(interocular(lms[30]))
    lms[30, 2:15] += (0.0, 0.6 * iod)  # the jaw slid down the neck
    lms[31, [0, 1, 2, 14, 15, 16]] *= (1.0, 1.4)  # the contour stretched: stable points off
    targets = render_targets(lms, np.arange(len(lms)), clip.template)
    expected = [plausible_target(x, None, clip.template,
                                 transform=similarity_to_canonical(x, clip.template))
                for x in targets.landmarks]
    assert targets.plausible.tolist() == expected
    assert not all(expected) and sum(expected) > len(expected) // 2
    # A transform the fit would never give (sheared), judged the same both ways.
    m = targets.to_canonical.copy()
    m[5, :, :2] = np.array([[1.0, 0.4], [0.0, 0.6]]) @ m[5, :, :2]
    one_by_one = [plausible_target(x, None, clip.template, transform=t)
                  for x, t in zip(targets.landmarks, m, strict=True)]
    assert plausible_targets(targets.landmarks, clip.template, m).tolist() == one_by_one
    assert not one_by_one[5]
    # The engine moves a row's fit to a window at ``origin``.
    origin = np.array([37.0, 21.0])
    moved = targets.to_canonical_at(40, origin)
    local = targets.landmarks[40] - origin
    np.testing.assert_allclose(local @ moved[:, :2].T + moved[:, 2],
                               targets.landmarks[40] @ targets.to_canonical[40][:, :2].T
                               + targets.to_canonical[40][:, 2], atol=1e-6)
    refit = similarity_to_canonical(local, clip.template)
    np.testing.assert_allclose(local @ moved[:, :2].T + moved[:, 2],
                               local @ refit[:, :2].T + refit[:, 2], atol=0.05)


# ------------------------------------------------------------------ sharpness


@pytest.mark.parametrize("f", [15, 70])
def test_match_sharpness_restores_two_resamplings(clip: Clip, f: int) -> None:
    src = _roi(clip, f)
    mask = _mask(clip, f)
    # Two bilinear warps at half-pixel offsets: the frame -> canonical -> frame round trip.
    m = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    soft = cv2.warpAffine(src, m, src.shape[1::-1], flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    m[:, 2] = -0.5
    soft = cv2.warpAffine(soft, m, src.shape[1::-1], flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    lips = np.zeros(src.shape[:2], np.uint8)
    cv2.fillPoly(lips, [_lips(clip, f)[:12].round().astype(np.int32)], 1)
    inside = lips.astype(bool)

    def ratio(x: np.ndarray) -> float:
        g = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        return lapvar(g, inside) / lapvar(cv2.cvtColor(src, cv2.COLOR_RGB2GRAY), inside)

    assert ratio(soft) < 0.7
    fixed = match_sharpness(soft, src, mask)
    assert 0.85 <= ratio(fixed) <= 1.3
    # Already sharp: left alone.
    same = match_sharpness(src, src, mask)
    assert np.abs(same - src).max() < 1e-3
    # Sharper than the frame it lands in (an entry from a still frame pasted into a
    # soft, moving one): softened to it, not left crisp.
    def ratio_to(x: np.ndarray, ref: np.ndarray) -> float:
        g = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        return lapvar(g, inside) / lapvar(cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY), inside)

    assert ratio_to(src, soft) > 1.4
    softened = match_sharpness(src, soft, mask)
    assert 0.8 <= ratio_to(softened, soft) <= 1.2

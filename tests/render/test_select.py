"""Entry selection: a mouth never moves further in one frame than the targets allow, even
where a natural run of source frames would make the jump for free."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lipdub.faces.geometry import lip_height
from lipdub.render.bank import Bank
from lipdub.render.select import select_entries


def _bank(openings: list[float], frames: list[int], thumbs: np.ndarray) -> Bank:
    k = len(openings)
    return Bank(
        canonical=None,  # type: ignore[arg-type]  # selection never looks at it
        patches=np.zeros((k, 2, 2, 3), np.uint8),
        landmarks=np.zeros((k, 68, 2), np.float32),
        opening=np.asarray(openings, np.float32),
        width=np.full(k, 0.9, np.float32),
        pose=np.zeros((k, 3), np.float32),
        frames=np.asarray(frames),
        source_frames=np.asarray(frames),
        thumbs=thumbs.astype(np.float32),
    )


def test_a_natural_run_does_not_buy_a_jump() -> None:
    # Shut (frame 0) and wide open (frame 1) are neighbours in the source: following them
    # costs nothing, while the half-open entry (frame 50) looks different from both.
    rng = np.random.default_rng(0)
    a = rng.normal(size=192)
    thumbs = np.stack([a, a, -3.0 * a])
    bank = _bank([0.0, 0.2, 0.1], [0, 1, 50], thumbs)
    target = np.array([0.0, 0.1, 0.2])
    width = np.full(3, 0.9)
    pose = np.zeros((3, 3))
    free = select_entries(bank, target, width, pose)
    limited = select_entries(bank, target, width, pose, max_step=0.1)
    # Without a limit the cheap path holds shut and then snaps open in one frame...
    assert np.abs(np.diff(bank.opening[free])).max() > 0.15
    # ...with it, the half-open entry carries the mouth through.
    assert bank.opening[limited].tolist() == [0.0, np.float32(0.1), np.float32(0.2)]
    assert np.abs(np.diff(bank.opening[limited])).max() <= 0.1 + 1e-6


def test_a_closure_takes_the_entry_whose_lips_are_surely_together() -> None:
    # Both entries read shut by their inner-lip points (dlib collapses them for lips just
    # parted too); the first has the thicker outer lips of a mouth slightly open.
    lm = np.zeros((2, 68, 2), np.float32)
    lm[:, 36:42] = (-30.0, 0.0)  # eyes 60 px apart
    lm[:, 42:48] = (30.0, 0.0)
    lm[:, 51] = (0.0, 50.0)
    lm[0, 57] = (0.0, 80.0)
    lm[1, 57] = (0.0, 72.0)
    bank = _bank([0.006, 0.008], [0, 40], np.zeros((2, 192)))
    bank.landmarks[:] = lm
    target, width, pose = np.full(1, 0.004), np.full(1, 0.9), np.zeros((1, 3))
    assert select_entries(bank, target, width, pose).tolist() == [0]  # nearest opening
    shut = select_entries(bank, target, width, pose, target_closure=np.ones(1))
    assert shut.tolist() == [1]


def test_lips_do_not_swell_or_part_in_one_frame_where_the_inner_points_cannot_tell() -> None:
    # A run of 40 source frames with the lips together and steady, then one frame whose
    # inner points read the same (dlib collapses them) but whose outer lips are much
    # taller: a parted mouth. It matches the second target best and follows naturally.
    n = 41
    lm = np.zeros((n, 68, 2), np.float32)
    lm[:, 36:42] = (-30.0, 0.0)
    lm[:, 42:48] = (30.0, 0.0)
    lm[:, 51] = (0.0, 50.0)
    rng = np.random.default_rng(1)
    lm[:, 57, 1] = 68.0 + rng.uniform(0, 0.3, n)
    lm[-1, 57, 1] = 77.0  # lip height 0.45 eye distances instead of 0.30
    openings = [0.02] * (n - 2) + [0.010, 0.011]  # the run ends near shut
    bank = _bank(openings, list(range(n)), np.zeros((n, 192)))
    bank.landmarks[:] = lm
    target, width, pose = np.array([0.010, 0.011]), np.full(2, 0.9), np.zeros((2, 3))
    height = lip_height(bank.landmarks)
    free = select_entries(bank, target, width, pose)
    # By the inner points alone the run's last frame, then the parted one, fit best...
    assert free.tolist() == [n - 2, n - 1] and np.ptp(height[free]) > 0.1
    # ...with the lips' own pace, whichever frames are taken, the lips do not change.
    limited = select_entries(bank, target, width, pose, max_step=0.05)
    assert np.ptp(height[limited]) < 0.01


def test_neighbouring_rows_across_a_gap_are_not_a_natural_run() -> None:
    # Two entries from neighbouring rows of one face track that was joined across a cut:
    # rows 10 and 11, frames 10 and 200. They look nothing alike; the second is a hair
    # nearer the second target. Read as neighbouring frames, the switch was free.
    rng = np.random.default_rng(2)
    a = rng.normal(size=192)
    bank = _bank([0.10, 0.104], [10, 11], np.stack([a, -3.0 * a]))
    target, width, pose = np.array([0.10, 0.104]), np.full(2, 0.9), np.zeros((2, 3))
    assert select_entries(bank, target, width, pose).tolist() == [0, 1]
    apart = select_entries(replace(bank, source_frames=np.array([10, 200])), target, width,
                           pose)
    assert apart.tolist() == [0, 0]

"""Pick one bank entry per output frame: close to the target shape, coherent over time.

A Viterbi pass over the K nearest entries of each frame. The unary cost is the distance to
the target (opening, width) in the person's units plus a head-pose penalty, with width
errors counted on the scale of the person's own width range (rounding and spreading are
as visible as opening, though smaller in pixels) and an extra cost for any opening on a
frame whose lips must be closed (a bilabial is never traded for smoothness); the pairwise
cost favours staying on a natural source sequence (the next source frame) and otherwise
penalises appearance jumps, which is what makes a mouth flicker.
"""

from __future__ import annotations

import numpy as np

from lipdub.faces.geometry import lip_height
from lipdub.render.bank import Bank


def select_entries(
    bank: Bank,
    target_open: np.ndarray,
    target_width: np.ndarray,
    target_pose: np.ndarray,
    *,
    target_closure: np.ndarray | None = None,
    candidates: int = 12,
    w_width: float = 0.6,
    w_closure: float = 2.0,
    w_pose: float = 0.004,
    w_jump: float = 0.02,
    w_look: float = 0.015,
    max_step: float | None = None,
    w_speed: float = 3.0,
    w_seal: float = 2.0,
) -> np.ndarray:
    """Indices into ``bank`` for each of the T target frames.

    ``max_step`` is the largest change of opening from one frame to the next that the
    mouth may make (the targets' own limit): a pair of entries further apart costs
    ``w_speed`` per unit of opening beyond it, natural sequences included. Without it,
    two targets a small step apart could take entries on either side of them, and the
    switch between a nearly shut and a half open entry was the one-frame jump an
    independent landmark track sees (bench/motion.py), though the targets were smooth.
    """
    src_frames = bank.source_frames  # runs of the source are runs of frames, not of rows
    t_len = len(target_open)
    if t_len == 0:
        return np.zeros(0, np.int64)
    k = min(candidates, len(bank))
    # Units: the opening (~0..0.5); a width error counts as the same share of the width
    # range as an opening error of the opening range.
    o_span = float(np.ptp(bank.opening)) or 1.0
    w_span = float(np.ptp(bank.width)) or 1.0
    d_shape = (np.abs(bank.opening[None, :] - target_open[:, None])
               + w_width * o_span / w_span
               * np.abs(bank.width[None, :] - target_width[:, None]))
    if target_closure is not None:
        excess = np.maximum(bank.opening[None, :] - target_open[:, None], 0.0)
        # Among entries whose inner lips read shut, the thinner the lips the more surely
        # they are together (``lip_height``): a closure takes the thinnest it can.
        seal = lip_height(bank.landmarks)
        seal = seal - seal.min()
        d_shape = d_shape + np.asarray(target_closure)[:, None] * (
            w_closure * excess + w_seal * seal[None, :])
    d_pose = np.abs(bank.pose[None, :, :2] - target_pose[:, None, :2]).sum(-1)
    unary_all = d_shape + w_pose * d_pose
    cand = np.argsort(unary_all, axis=1)[:, :k]  # (T, k)
    unary = np.take_along_axis(unary_all, cand, axis=1)
    # The outer lips' height moves with the mouth where the inner points cannot tell
    # (near shut, where dlib collapses them): steps of it beyond the person's own
    # fastest, measured on the bank's runs of consecutive source frames, cost as opening
    # steps do. Without it two entries both read "nearly shut" could be a closed and a
    # parted mouth, and the switch was a jump an independent track saw (bench/motion.py).
    height = lip_height(bank.landmarks)
    h_step = None
    if max_step is not None:
        natural_pairs = np.diff(src_frames) == 1
        if natural_pairs.sum() >= 20:
            h_step = float(np.percentile(np.abs(np.diff(height))[natural_pairs], 99))
    cost = unary[0].copy()
    back = np.zeros((t_len, k), np.int64)
    for t in range(1, t_len):
        prev, cur = cand[t - 1], cand[t]
        same_run = (src_frames[cur][None, :] - src_frames[prev][:, None])
        natural = (same_run >= 0) & (same_run <= 2)
        look = np.abs(bank.thumbs[prev][:, None, :] - bank.thumbs[cur][None, :, :]).mean(-1)
        trans = np.where(natural, 0.0, w_jump + w_look * look)
        if max_step is not None:
            step = np.abs(bank.opening[cur][None, :] - bank.opening[prev][:, None])
            trans = trans + w_speed * np.maximum(step - max_step, 0.0)
        if h_step is not None:
            h = np.abs(height[cur][None, :] - height[prev][:, None])
            trans = trans + w_speed * np.maximum(h - h_step, 0.0)
        total = cost[:, None] + trans
        back[t] = np.argmin(total, axis=0)
        cost = total[back[t], np.arange(k)] + unary[t]
    path = np.zeros(t_len, np.int64)
    j = int(np.argmin(cost))
    for t in range(t_len - 1, -1, -1):
        path[t] = cand[t, j]
        j = int(back[t, j])
    return path

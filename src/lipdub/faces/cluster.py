"""Group face tracks into people with their embeddings.

Agglomerative clustering by centroid distance over dlib's 128-d embeddings, plus one
rule embeddings cannot break: two tracks visible in the same frame are two people. The
threshold (0.5) is stricter than dlib's usual 0.6 because merging two people is the
worse mistake: it would lip-sync the wrong mouth. Splitting one person shows up as an
extra face_id, which a user can see and ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np


class _TrackLike(Protocol):
    frames: list[int]
    embeddings: list[np.ndarray]


T = TypeVar("T", bound=_TrackLike)


def _overlap(a: _TrackLike, b: _TrackLike) -> bool:
    return a.frames[0] <= b.frames[-1] and b.frames[0] <= a.frames[-1]


def group_tracks(tracks: Sequence[T], threshold: float) -> list[list[T]]:
    """Return groups of tracks, each group one person."""
    clusters: list[list[T]] = [[t] for t in tracks]
    embs: list[np.ndarray] = [
        np.stack(t.embeddings) if t.embeddings else np.zeros((0, 128), np.float32)
        for t in tracks
    ]

    def distance(i: int, j: int) -> float:
        a, b = embs[i], embs[j]
        if len(a) == 0 or len(b) == 0:
            return np.inf
        if any(_overlap(x, y) for x in clusters[i] for y in clusters[j]):
            return np.inf
        # Centroid distance: averaging a track's embeddings cancels pose and blur noise
        # that pairwise distances keep (a profile frame vs a frontal one).
        return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)))

    while len(clusters) > 1:
        best = (np.inf, -1, -1)
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                d = distance(i, j)
                if d < best[0]:
                    best = (d, i, j)
        d, i, j = best
        if d >= threshold:
            break
        clusters[i] = clusters[i] + clusters[j]
        embs[i] = np.concatenate([embs[i], embs[j]])
        del clusters[j], embs[j]
    return clusters

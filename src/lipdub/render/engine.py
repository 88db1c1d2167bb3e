"""Lip-sync engines behind one small interface: session + per-face mouth targets in,
video out. The classic engine (exemplar bank, no neural weights) is the default; other
engines implement :class:`Engine` and plug in through :func:`lipdub.sync`'s ``engine``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lipdub.faces.session import Face, Session
from lipdub.media.video import VideoWriter, iter_frames, source_timing
from lipdub.render.bank import Bank, BankBuilder
from lipdub.render.compose import Compositor
from lipdub.render.select import select_entries

Progress = Callable[[float], None]


@dataclass
class FaceJob:
    """What to do to one face: per-video-frame targets and blend weights (0 = untouched)."""

    face: Face
    target_open: np.ndarray  # (n_frames,)
    target_width: np.ndarray  # (n_frames,)
    alpha: np.ndarray  # (n_frames,) 0..1, ramps at the window edges
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class Preview:
    """Mouth crops before and after, for the preview strip."""

    frames: list[int]
    before: list[np.ndarray] = field(default_factory=list)
    after: list[np.ndarray] = field(default_factory=list)


class Engine(Protocol):
    name: str

    def render(self, video: Path, session: Session, jobs: list[FaceJob], out: Path,
               audio: np.ndarray | None, sample_rate: int, progress: Progress,
               preview: Preview | None = None) -> int:
        """Write the output video; return the number of frames written."""
        ...


class ClassicEngine:
    """The person's own mouth from the source video, picked per frame and blended in."""

    name = "classic"

    def __init__(self, bank_size: int = 240, preset: str = "veryfast", crf: int = 18) -> None:
        self.bank_size = bank_size
        self.preset = preset
        self.crf = crf

    def _banks(self, video: Path, jobs: list[FaceJob], progress: Progress) -> list[Bank]:
        """First pass: collect each face's bank from the frames it needs (stops early)."""
        builders = [BankBuilder(j.face.track.landmarks, j.face.track.frames,
                                j.face.track.pose, cap=self.bank_size) for j in jobs]
        last = max(int(j.face.track.frames[-1]) for j in jobs)
        for fr in iter_frames(video, rgb_for=lambda i: any(b.wants(i) for b in builders)):
            for b in builders:
                if b.wants(fr.index):
                    b.add(fr.index, fr.rgb)
            progress(0.25 * fr.index / max(last, 1))
            if fr.index >= last:
                break
        return [b.build() for b in builders]

    def render(self, video: Path, session: Session, jobs: list[FaceJob], out: Path,
               audio: np.ndarray | None, sample_rate: int, progress: Progress,
               preview: Preview | None = None) -> int:
        banks = self._banks(video, jobs, progress)
        plans = []
        for job, bank in zip(jobs, banks, strict=True):
            tr = job.face.track
            rows_frames = tr.frames
            active = job.alpha[rows_frames] > 0
            sel_frames = rows_frames[active]
            picks = select_entries(bank, job.target_open[sel_frames],
                                   job.target_width[sel_frames], tr.pose[active])
            plan = {int(f): int(k) for f, k in zip(sel_frames, picks, strict=True)}
            plans.append((job, Compositor(bank), plan))
            job.stats.update(bank_entries=float(len(bank)), frames_changed=float(len(plan)),
                             distinct_entries=float(len(set(plan.values()))))
        rate, time_base = source_timing(video)
        info = session.video
        total = max(info.frame_count, 1)
        first_pts: int | None = None
        written = 0
        wanted = set(preview.frames) if preview else set()
        with VideoWriter(out, info.width, info.height, rate, time_base=time_base, audio=audio,
                         sample_rate=sample_rate, crf=self.crf, preset=self.preset) as writer:
            touched = set().union(*(plan.keys() for _, _, plan in plans))
            for fr in iter_frames(video, rgb_for=touched.__contains__):
                rgb: np.ndarray | None = None
                for job, comp, plan in plans:
                    entry = plan.get(fr.index)
                    if entry is None:
                        continue
                    row = job.face.track.index_of(fr.index)
                    if row is None:
                        continue
                    if rgb is None:
                        rgb = fr.rgb
                    # The strip shows the first face (its frames were the ones picked).
                    shot = preview is not None and fr.index in wanted and job is jobs[0]
                    if shot and preview is not None:
                        preview.before.append(_mouth_crop(rgb, job.face, row))
                    comp.render(rgb, job.face.track.landmarks[row], entry,
                                float(job.alpha[fr.index]), float(job.target_open[fr.index]))
                    if shot and preview is not None:
                        preview.after.append(_mouth_crop(rgb, job.face, row))
                if first_pts is None:
                    first_pts = fr.pts
                pts = None if fr.pts is None or first_pts is None else fr.pts - first_pts
                if rgb is None:
                    writer.write_source(fr, pts)
                else:
                    writer.write(rgb, pts)
                written += 1
                progress(0.25 + 0.75 * written / total)
        return written


def _mouth_crop(rgb: np.ndarray, face: Face, row: int, size: int = 160) -> np.ndarray:
    lm = face.track.landmarks[row]
    c = lm[48:68].mean(axis=0)
    half = 0.9 * float(np.linalg.norm(lm[16] - lm[0])) / 2
    h, w = rgb.shape[:2]
    x0, y0 = int(max(c[0] - half, 0)), int(max(c[1] - half * 0.8, 0))
    x1, y1 = int(min(c[0] + half, w)), int(min(c[1] + half * 1.0, h))
    crop = rgb[y0:y1, x0:x1]
    if crop.size == 0:
        return np.zeros((size, size, 3), np.uint8)
    return cv2.resize(crop, (size, int(size * crop.shape[0] / max(crop.shape[1], 1))))


def preview_strip(p: Preview, path: Path) -> Path:
    """Before (top row) and after (bottom row) mouth crops side by side."""
    pairs = list(zip(p.before, p.after, strict=False))
    if not pairs:
        raise ValueError("no preview frames were rendered")
    h = max(max(a.shape[0], b.shape[0]) for a, b in pairs)

    def pad(x: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(x, 0, h - x.shape[0], 2, 2, cv2.BORDER_CONSTANT,
                                  value=(255, 255, 255))

    top = np.hstack([pad(a) for a, _ in pairs])
    bottom = np.hstack([pad(b) for _, b in pairs])
    label = np.full((24, top.shape[1], 3), 255, np.uint8)
    img = np.vstack([label, top, label.copy(), bottom])
    cv2.putText(img, "before", (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "after (lip-synced)", (6, 24 + h + 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


__all__ = ["ClassicEngine", "Engine", "FaceJob", "Preview", "preview_strip"]

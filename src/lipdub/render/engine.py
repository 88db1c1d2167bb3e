"""Lip-sync engines behind one small interface: session + per-face mouth targets in,
video out. The classic engine (exemplar bank, no neural weights) is the default; other
engines implement :class:`Engine` and plug in through :func:`lipdub.sync`'s ``engine``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lipdub.faces.crops import FaceCrops, lower_face_window, window_rgb
from lipdub.faces.session import Face, Session
from lipdub.media.memory import trim_heap
from lipdub.media.pools import serial_libraries
from lipdub.media.video import (
    DEFAULT_CRF,
    DEFAULT_PRESET,
    BackgroundWriter,
    Frame,
    VideoWriter,
    iter_frames,
    source_timing,
    usable_cores,
)
from lipdub.media.yuv import YuvPicture, editable
from lipdub.render.bank import Bank, BankBuilder
from lipdub.render.compose import Compositor
from lipdub.render.entries import score_entries, subset_bank, vet_entries
from lipdub.render.patch_check import SmallLab, check_patch, roi_box
from lipdub.render.select import select_entries
from lipdub.render.targets import (
    MAX_LANDMARK_JUMP,
    RenderTargets,
    landmark_jumps,
    render_targets,
)

log = logging.getLogger(__name__)

Progress = Callable[[float], None]


@dataclass
class FaceJob:
    """What to do to one face: per-video-frame targets and blend weights (0 = untouched)."""

    face: Face
    target_open: np.ndarray  # (n_frames,)
    target_width: np.ndarray  # (n_frames,)
    alpha: np.ndarray  # (n_frames,) 0..1, ramps at the window edges
    target_closure: np.ndarray | None = None  # (n_frames,) 1 where the lips must touch
    # The largest change of opening per frame the targets allow (None: no limit).
    max_step: float | None = None
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class Preview:
    """Mouth crops before and after, for the preview strip: per face (face_id -> the
    frames to show, and their crops), so a multi-face sync shows every face it changed."""

    frames: dict[str, list[int]]
    before: dict[str, list[np.ndarray]] = field(default_factory=dict)
    after: dict[str, list[np.ndarray]] = field(default_factory=dict)


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

    def __init__(self, bank_size: int = 240, preset: str = DEFAULT_PRESET,
                 crf: int = DEFAULT_CRF, x264_params: str | None = None) -> None:
        self.bank_size = bank_size
        self.preset = preset
        self.crf = crf
        self.x264_params = x264_params  # None: by picture size (video.x264_params_for)
        self.timings: dict[str, float] = {}
        self._early: tuple[Path, list[Face], Future[list[_Assets]], threading.Event] | None = None

    def begin(self, video: Path, faces: list[Face]) -> None:
        """Start building the faces' banks (and readying their tracks) in a thread now, so
        that the work overlaps what the caller does before :meth:`render` (sync prepares
        the audio and the mouth targets meanwhile). ``render`` with the same video and
        faces takes the result."""
        self.abandon()
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipdub-bank-early")
        fut = pool.submit(self._assets, video, list(faces), lambda _f: None, stop)
        pool.shutdown(wait=False)  # the thread ends with its one task
        self._early = (video, list(faces), fut, stop)

    def abandon(self) -> None:
        """Stop a bank build :meth:`begin` started (the caller failed before rendering):
        a long video's bank must not keep a process busy, or alive, for nothing."""
        early, self._early = self._early, None
        if early is not None:
            early[3].set()

    def _assets(self, video: Path, faces: list[Face], progress: Progress,
                stop: threading.Event | None = None) -> list[_Assets]:
        """Each face's bank, vetted (the unvetted ones are freed on return), and its track
        ready for rendering (spikes repaired, every row aligned and checked once)."""
        out = []
        for b, f in zip(self._banks(video, faces, progress, stop), faces, strict=True):
            if stop is not None and stop.is_set():
                raise _Abandoned
            bank = _vetted(b, f.face_id)
            tr = f.track
            targets = render_targets(tr.landmarks, tr.frames, bank.canonical.template)
            if targets.repaired.any():
                log.info("%s: tracked lips repaired on %d frames (%s)", f.face_id,
                         int(targets.repaired.sum()),
                         ", ".join(str(int(x)) for x in tr.frames[targets.repaired][:8]))
            out.append(_Assets(bank, targets))
        return out

    def _banks(self, video: Path, faces: list[Face], progress: Progress,
               stop: threading.Event | None = None) -> list[Bank]:
        """Each face's bank: from the crops identify kept (no decoding), else from a first
        pass over the video that converts only each face's window and stops early."""
        banks: dict[int, Bank] = {}
        decode: list[int] = []
        for i, face in enumerate(faces):
            tr, crops = face.track, face.crops
            # Crops that belong to this track (a session's own; anything else decodes).
            if crops is not None and len(crops) and np.isin(crops.frames, tr.frames).all():
                b = BankBuilder(tr.landmarks, tr.frames, tr.pose, cap=self.bank_size,
                                only=crops.frames)

                def take(k: int, b: BankBuilder = b, crops: FaceCrops = crops) -> None:
                    if stop is not None and stop.is_set():
                        raise _Abandoned
                    b.add(int(crops.frames[k]), crops.image(k), crops.to_frame(k))

                # JPEG decoding and the cubic warp release the GIL: both cores work.
                try:
                    with ThreadPoolExecutor(max_workers=usable_cores(),
                                            thread_name_prefix="lipdub-bank") as pool:
                        list(pool.map(take, range(len(crops))))
                    banks[i] = b.build()
                    continue
                except _Abandoned:
                    raise
                except Exception as e:  # a damaged crops file: decode instead
                    log.warning("%s: stored crops unusable (%s): decoding the video for "
                                "the bank", face.face_id, e)
            decode.append(i)
        if decode:
            builders = {i: BankBuilder(faces[i].track.landmarks, faces[i].track.frames,
                                       faces[i].track.pose, cap=self.bank_size)
                        for i in decode}
            last = max(int(faces[i].track.frames[-1]) for i in decode)
            for fr in iter_frames(video):
                if stop is not None and stop.is_set():
                    raise _Abandoned
                for i, b in builders.items():
                    if not b.wants(fr.index):
                        continue
                    tr = faces[i].track
                    row = tr.index_of(fr.index)
                    assert row is not None  # a builder wants only its track's frames
                    rgb, box = window_rgb(fr, lower_face_window(tr.landmarks[row], *fr.size))
                    shift = np.array([[1.0, 0, box[0]], [0, 1.0, box[1]]])
                    b.add(fr.index, rgb, shift)
                progress(0.25 * fr.index / max(last, 1))
                if fr.index >= last:
                    break
            banks.update({i: b.build() for i, b in builders.items()})
        return [banks[i] for i in range(len(faces))]

    def render(self, video: Path, session: Session, jobs: list[FaceJob], out: Path,
               audio: np.ndarray | None, sample_rate: int, progress: Progress,
               preview: Preview | None = None) -> int:
        with serial_libraries():
            return self._render(video, session, jobs, out, audio, sample_rate, progress,
                                preview)

    def _render(self, video: Path, session: Session, jobs: list[FaceJob], out: Path,
                audio: np.ndarray | None, sample_rate: int, progress: Progress,
                preview: Preview | None) -> int:
        t0 = time.perf_counter()
        early, self._early = self._early, None
        # The same video and the very same Face objects (not just their ids: another
        # session of the same video has other tracks).
        if (early is not None and early[0] == video and len(early[1]) == len(jobs)
                and all(a is j.face for a, j in zip(early[1], jobs, strict=True))):
            assets = early[2].result()  # begun while sync prepared the audio
        else:
            if early is not None:
                early[3].set()
            assets = self._assets(video, [j.face for j in jobs], progress)
        del early
        trim_heap()
        t1 = time.perf_counter()
        plans = []
        for job, asset in zip(jobs, assets, strict=True):
            bank, tr = asset.bank, job.face.track
            rows_frames = tr.frames
            active = job.alpha[rows_frames] > 0
            sel_frames = rows_frames[active]
            closure = (None if job.target_closure is None
                       else job.target_closure[sel_frames])
            picks = select_entries(bank, job.target_open[sel_frames],
                                   job.target_width[sel_frames], tr.pose[active],
                                   target_closure=closure, max_step=job.max_step)
            # Frame -> (bank entry, track row), both looked up once here.
            rows = np.flatnonzero(active)
            plan = {int(f): (int(k), int(r))
                    for f, k, r in zip(sel_frames, picks, rows, strict=True)}
            guard = _Guarded(Compositor(bank), job.face.face_id, asset.targets)
            guard.expect(rows)
            plans.append((job, guard, plan))
            job.stats.update(bank_entries=float(len(bank)), frames_changed=float(len(plan)),
                             distinct_entries=float(len({k for k, _ in plan.values()})))
        t2 = time.perf_counter()
        rate, time_base = source_timing(video)
        info = session.video
        total = max(info.frame_count, 1)
        first_pts: int | None = None
        written = 0
        wanted = {fid: set(f) for fid, f in preview.frames.items()} if preview else {}
        # Encoding runs in its own thread while the next frames are composed.
        with BackgroundWriter(VideoWriter(out, info.width, info.height, rate,
                                          time_base=time_base, audio=audio,
                                          sample_rate=sample_rate, crf=self.crf,
                                          preset=self.preset,
                                          x264_params=self.x264_params,
                                          source=video)) as writer:
            for fr in iter_frames(video):
                work = []
                for job, comp, plan in plans:
                    todo = plan.get(fr.index)
                    if todo is not None:
                        work.append((job, comp, *todo))
                if first_pts is None:
                    first_pts = fr.pts
                pts = None if fr.pts is None or first_pts is None else fr.pts - first_pts
                if not work:
                    writer.write_source(fr, pts)
                else:
                    pic = _picture(fr)
                    full = None if pic is not None else fr.rgb  # the rare non-4:2:0 source
                    for job, comp, entry, row in work:
                        lm = comp.targets.landmarks[row]
                        if pic is not None:
                            box = pic.window(lower_face_window(lm, pic.width,
                                                              pic.height))
                            if box[2] - box[0] < 8 or box[3] - box[1] < 8:
                                continue  # the face is (nearly) off the picture
                            rgb = pic.rgb(box)
                            before: np.ndarray | None = rgb.copy()
                            origin = np.array(box[:2], np.float32)
                        else:
                            assert full is not None
                            rgb, before, origin = full, None, np.zeros(2, np.float32)
                        fid = job.face.face_id
                        shot = preview is not None and fr.index in wanted.get(fid, ())
                        if shot and preview is not None:
                            preview.before.setdefault(fid, []).append(
                                _mouth_crop(rgb, lm - origin))
                        comp.render(rgb, before, fr.index, row, lm - origin, origin, entry,
                                    float(job.alpha[fr.index]),
                                    float(job.target_open[fr.index]),
                                    float(job.target_width[fr.index]))
                        if shot and preview is not None:
                            preview.after.setdefault(fid, []).append(
                                _mouth_crop(rgb, lm - origin))
                        if pic is not None and before is not None:
                            pic.put(box, rgb, before, region=comp.drawn())
                    if pic is not None:
                        writer.write_picture(pic, pts)
                    elif full is not None:
                        writer.write(full, pts)
                written += 1
                progress(0.25 + 0.75 * written / total)
        for job, comp, _ in plans:
            job.stats.update(frames_rejected=float(comp.rejected))
        # Wall seconds per stage, for logs and bench/speed.py.
        self.timings = {"bank_s": t1 - t0, "select_s": t2 - t1,
                        "render_encode_s": time.perf_counter() - t2}
        return written


@dataclass
class _Assets:
    """What a face's render needs besides its audio: made while the audio is prepared."""

    bank: Bank
    targets: RenderTargets


class _Abandoned(Exception):
    """A bank build :meth:`ClassicEngine.begin` started was given up."""


def _picture(fr: Frame) -> YuvPicture | None:
    """The frame's planes for editing in place, or None when it needs the full-RGB path."""
    return YuvPicture(fr.av_frame) if editable(fr.av_frame, fr.rotation) else None


def _vetted(bank: Bank, face_id: str) -> Bank:
    """The bank without entries that would show garbage (occlusion, landmark failure,
    blur, extreme pose), each dropped entry logged with its reason."""
    scores = score_entries(bank.patches, bank.landmarks, bank.canonical.template, bank.pose)
    keep = vet_entries(bank.patches, bank.landmarks, bank.canonical.template, bank.pose,
                       scores=scores)
    for k in np.flatnonzero(~keep):
        log.info("%s: bank entry from frame %d dropped (%s)", face_id,
                 int(bank.source_frames[k]), scores.reason(int(k)))
    return subset_bank(bank, keep) if not keep.all() else bank


class _Guarded:
    """A compositor whose every rendered patch is checked before it is kept.

    A frame whose tracked landmarks cannot carry a warp is left as it is; a patch that
    fails the check (colour, structure, a jump beyond what the source does) is rendered
    again with the last entry that passed, and if that fails too the frame keeps its
    original pixels. Each fallback is logged and counted.
    """

    def __init__(self, comp: Compositor, face_id: str, targets: RenderTargets) -> None:
        self.comp = comp
        self.face_id = face_id
        self.targets = targets  # the track's landmarks (spikes repaired), aligned, checked
        self.prev_lm: np.ndarray | None = None
        self.prev_row: int | None = None
        self.prev_out: SmallLab | None = None
        self.prev_src: SmallLab | None = None
        self.last_good: int | None = None
        self.rejected = 0
        self._jumps: dict[tuple[int, int], float] = {}
        # The bank entry taken from each track row that has one (sharpening calibration).
        # Bank.frames holds track rows, not frame numbers: on a track that starts late or
        # skips frames the two differ, and the entry of another frame (another mouth)
        # would set the amount.
        self._own = {int(r): k for k, r in enumerate(comp.bank.frames)}

    def expect(self, rows: np.ndarray) -> None:
        """The track rows about to be rendered, in order: the landmark jump between each
        and the one before is measured for all of them at once (one vectorised pass instead
        of a millisecond of small NumPy calls per frame)."""
        if len(rows) > 1:
            lm = self.targets.landmarks
            jumps = landmark_jumps(lm[rows[:-1]], lm[rows[1:]])
            self._jumps = {(int(a), int(b)): float(j)
                           for a, b, j in zip(rows[:-1], rows[1:], jumps, strict=True)}

    def render(self, rgb: np.ndarray, source: np.ndarray | None, index: int, row: int,
               lm: np.ndarray, origin: np.ndarray, entry: int, alpha: float,
               want_open: float, want_width: float) -> None:
        """Render track row ``row`` (frame ``index``; ``lm``: its landmarks in ``rgb``'s
        pixels, ``origin``: where ``rgb`` starts in the frame) with bank entry ``entry``,
        or fall back (see the class). ``source``: a copy of ``rgb`` as it was, if the
        caller keeps one."""
        to_c = self.targets.to_canonical_at(row, origin)  # fitted ahead, moved to rgb's
        # The jump from the previous frame: measured ahead when that frame was the one
        # expected before this (the usual case), here otherwise.
        jump = self._jumps.get((self.prev_row, row)) if self.prev_row is not None else None
        if (jump is None and self.prev_lm is not None and self.targets.plausible[row]
                and np.isfinite(self.prev_lm).all()):
            jump = float(landmark_jumps(self.prev_lm, lm)[0])
        if not self.targets.plausible[row] or (jump is not None and jump > MAX_LANDMARK_JUMP):
            self._reject(index, "tracked landmarks implausible", row, lm, landmarks_ok=False)
            return
        x0, y0, x1, y1 = roi_box(lm, rgb.shape)
        src = rgb[y0:y1, x0:x1].copy() if source is None else source[y0:y1, x0:x1]
        src_small = SmallLab.of(src)
        lips = lm[48:68] - (x0, y0)
        why = ""
        for k in dict.fromkeys([entry, self.last_good]):
            if k is None:
                continue
            if self.comp.render(rgb, lm, k, alpha, want_open, want_width, to_c,
                                own=self._own.get(row)) is None:
                return
            out_small = SmallLab.of(rgb[y0:y1, x0:x1])
            pasted = self.comp.last_lips
            ok, why = check_patch(out_small, src_small, self.prev_out,
                                  self._mask(x0, y0, x1, y1), prev_source_roi=self.prev_src,
                                  lips=lips,
                                  new_lips=None if pasted is None else pasted - (x0, y0))
            if ok:
                self.last_good = k
                self._accept(row, lm, out_small, src_small)
                return
            rgb[y0:y1, x0:x1] = src
        self._reject(index, why, row, lm)

    def drawn(self) -> tuple[int, int, int, int] | None:
        """Where the last render may have changed pixels (x0, y0, x1, y1), or None."""
        if self.comp.last_blend is None:
            return None
        bx, by, wm = self.comp.last_blend
        return bx, by, bx + wm.shape[1], by + wm.shape[0]

    def _mask(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The compositor's last blend weights, placed in the box (x0, y0, x1, y1)."""
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        if self.comp.last_blend is None:
            return mask
        bx, by, wm = self.comp.last_blend
        ax0, ay0 = max(bx, x0), max(by, y0)
        ax1, ay1 = min(bx + wm.shape[1], x1), min(by + wm.shape[0], y1)
        if ax1 > ax0 and ay1 > ay0:
            mask[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = wm[ay0 - by:ay1 - by, ax0 - bx:ax1 - bx]
        return mask

    def _accept(self, row: int, lm: np.ndarray, out: SmallLab, src: SmallLab) -> None:
        self.prev_row, self.prev_lm, self.prev_out, self.prev_src = row, lm, out, src

    def _reject(self, index: int, why: str, row: int, lm: np.ndarray,
                landmarks_ok: bool = True) -> None:
        """The frame keeps its original pixels. The next frame's patch is then judged
        against the last *accepted* output and its source, not against this frame's
        original pixels: a dub differs from the original away from the mouth too (jaw,
        chin), so judged against them every next patch read as a jump and one refused
        frame became seven (face_4, bench/articulation.py). The flash back to the dub
        cannot be avoided; it can be kept to the refused frames."""
        self.rejected += 1
        log.warning("%s: frame %d kept original pixels (%s)", self.face_id, index, why)
        self.prev_row, self.prev_lm = row, lm
        if not landmarks_ok:
            # Nothing to judge the next patch against: the face was not where it seemed.
            self.prev_out = self.prev_src = None


def _mouth_crop(rgb: np.ndarray, lm: np.ndarray, size: int = 160) -> np.ndarray:
    c = lm[48:68].mean(axis=0)
    half = 0.9 * float(np.linalg.norm(lm[16] - lm[0])) / 2
    h, w = rgb.shape[:2]
    x0, y0 = int(max(c[0] - half, 0)), int(max(c[1] - half * 0.8, 0))
    x1, y1 = int(min(c[0] + half, w)), int(min(c[1] + half * 1.0, h))
    crop = rgb[y0:y1, x0:x1]
    if crop.size == 0:
        return np.zeros((size, size, 3), np.uint8)
    return cv2.resize(crop, (size, int(size * crop.shape[0] / max(crop.shape[1], 1))))


def _label(width: int, text: str) -> np.ndarray:
    row = np.full((24, width, 3), 255, np.uint8)
    cv2.putText(row, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return row


def preview_strip(p: Preview, path: Path) -> Path:
    """Per face changed, a row of mouth crops before and a row after, side by side; the
    faces one under the other, each labelled with its face_id."""
    faces = [(fid, list(zip(p.before.get(fid, []), p.after.get(fid, []), strict=False)))
             for fid in p.frames]
    faces = [(fid, pairs) for fid, pairs in faces if pairs]
    if not faces:
        raise ValueError("no preview frames were rendered")
    blocks = []
    for fid, pairs in faces:
        h = max(max(a.shape[0], b.shape[0]) for a, b in pairs)

        def pad(x: np.ndarray, h: int = h) -> np.ndarray:
            return cv2.copyMakeBorder(x, 0, h - x.shape[0], 2, 2, cv2.BORDER_CONSTANT,
                                      value=(255, 255, 255))

        top = np.hstack([pad(a) for a, _ in pairs])
        bottom = np.hstack([pad(b) for _, b in pairs])
        blocks.append([_label(top.shape[1], f"{fid} before"), top,
                       _label(top.shape[1], f"{fid} after (lip-synced)"), bottom])
    width = max(part.shape[1] for block in blocks for part in block)
    img = np.vstack([
        cv2.copyMakeBorder(part, 0, 0, 0, width - part.shape[1], cv2.BORDER_CONSTANT,
                           value=(255, 255, 255))
        for block in blocks for part in block
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


__all__ = ["ClassicEngine", "Engine", "FaceJob", "Preview", "preview_strip"]

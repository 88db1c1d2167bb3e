"""Detect faces every few frames and follow them in between with landmarks.

Detection (dlib HOG on a resized grey frame) is the costly step, so it runs every
``detect_every`` frames and on scene cuts. HOG sees faces of 80 px or more in the picture
it searches, and the whole frame is searched at 640 px on its long side: in HD that is
faces above 160-240 px. Smaller ones (down to ``min_face_px``) are proposed by OpenCV's
Haar cascade, which is cheap at small sizes, on a picture scaled so the smallest face
is its 20 px window (every ``small_every_s`` and at cuts), and each proposal is
kept only if HOG, run around it at the scale the face needs, finds a face there.

HOG's filters are frontal and slightly turned: a profile, or a head turning far away,
is found by dlib's CNN detector instead (``mmod_detector``), where HOG does not answer
(settings ``turned_*``). A face only the CNN finds is marked turned on that frame
(``Track.turned_at``; faces.turned makes per-frame flags of it), its shape is the
predictor's stretched to the CNN's box and held until the next detection.

In between, each track's next landmarks come from the shape predictor started at the box
of its previous landmarks: faces move little from one frame to the next, and the
predictor pulls the shape onto the face. A detection
confirms a track; a track that several detections in a row do not confirm has drifted off
the face and ends at its last confirmed frame.

Two kinds of detection run in worker threads beside the tracking of the next frames,
which are held until their boxes come back: a search of the whole frame (new faces) and a
cheaper one around each track (confirmation). The boxes are judged on the frame they were
found in: matched against each track's landmarks there; a new face is followed back
through the held frames before while it is still found there, and forward to now. Neither
the lag nor the cadence shows in a face's time span, and the result does not depend on
which thread ran first.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cv2
import dlib
import numpy as np

from lipdub.faces import models
from lipdub.faces.pose import head_pose
from lipdub.media.video import Frame
from lipdub.media.yuv import editable


@dataclass(frozen=True)
class TrackerSettings:
    # Two kinds of detection run in worker threads, beside the tracking. Every
    # ``detect_every`` frames (and at every scene cut) the whole frame is searched for
    # new faces. Every ``confirm_every`` frames, only each track's surroundings are,
    # scaled so the face is HOG-sized: that re-seats the track's shape on the face, or
    # lets a track that lost it end. Measured at 720p: the whole frame 24 ms, one face's
    # surroundings 3 ms, a frame of tracking 4 ms.
    detect_every: int = 12
    confirm_every: int = 6
    # Frames tracked (and held) before a detection's boxes are used: a search of the
    # whole frame takes this long not to stall the tracking; a confirmation is used
    # soon, as its box is carried to the current frame by the track's own motion (with
    # 11 frames, fast movers drifted off their faces between re-seats).
    detect_lag: int = 11
    confirm_lag: int = 3
    # A face a search finds was not there at the search before: it is followed back
    # through up to this many held frames, while the detector still finds it around
    # itself, so its span starts where it appeared, not at the search that found it.
    look_back: int = 11
    # Held frames are decoded pictures (12 MB each at 4K): past this many bytes the
    # search's lag and the look-back shrink (at 4K to 6 frames each).
    held_bytes: int = 160 << 20
    reseat_iou: float = 0.8  # a confirmation re-seats the shape below this IoU (_confirm)
    confirm_face_px: float = 100.0  # a face's side in the confirmation's picture
    confirm_margin: float = 0.3  # context around a track's box, in box sides, each side
    detect_long_side: int = 640  # the detector sees frames resized to this long side
    max_upscale: float = 1.5  # small videos are enlarged so small faces reach HOG's 80 px
    min_face_px: int = 40  # faces smaller than this (box side, source pixels) are ignored
    # Faces smaller than the whole-frame search sees: proposed every ``small_every_s``
    # seconds (and at cuts) by a Haar cascade at ``proposal_px`` a face, then checked by
    # HOG around each proposal, enlarged up to ``roi_max_upscale`` (a 40 px face: 2.5x).
    # The cascade costs 40-65 ms a 720p frame, 110-160 ms a 1080p one (on 2 busy
    # cores), against 10 ms for the whole-frame HOG search: so it runs every 3 s, not
    # with every search (each new shot is searched at once), with the faces already
    # tracked blanked out (a talking head's face is a third of the frame).
    small_every_s: float = 3.0
    # The cascade's window is 20 px: at 20 a face it still finds the 40-45 px test
    # faces and the crowd's, at half the cost of 24 (the picture's pixels go with it).
    proposal_px: int = 20
    roi_max_upscale: float = 3.0
    # Turned faces (three-quarter beyond HOG's filters, profile): dlib's CNN detector
    # (MMOD) finds them, at about 5 us a pixel (50x HOG's cost). It confirms a track
    # only where HOG, around it, does not find the face (a head that turns away stays
    # one track), and it searches a whole frame, reduced so its long side is
    # ``turned_long_side`` (faces from a quarter of that side: a talking head), only
    # where the frontal searches find nobody: on a new shot and every ``turned_every_s``
    # while no face is tracked. A frontal talking head never pays for it.
    turned_long_side: int = 320
    turned_every_s: float = 1.0
    # A face's side in the picture MMOD confirms it on, tried in turn until it finds one:
    # on a profile its confidence hovers near its threshold and which scale finds the
    # face changes from frame to frame (Hamilton's close-up, frames 22-38: 90 px found
    # 4 of 5 frames, 120 px 5 of 5, but not the same ones; either found all).
    turned_face_px: tuple[float, ...] = (90.0, 120.0)
    # Faces smaller than this (side, source pixels) are not searched for turned: the
    # CNN's window is 80 px, and enlarged crowd faces of 45-50 px that HOG lost were
    # called turned when they were only small and blurred (facenet's crowd clip).
    turned_min_px: float = 80.0
    # A frontal face HOG misses is blurred, dim or covered; past this yaw (faces.pose's
    # degrees) it may be turning away, and the CNN looks (crowd walkers lost by HOG
    # cost 0.8 s of CNN each at 1080p, and none was turned).
    turning_yaw: float = 30.0
    max_misses: int = 2  # detections in a row that may miss a track before it ends
    match_iou: float = 0.3
    cut_threshold: float = 0.35  # share of a 16x9 thumbnail's cells that changed a lot
    embeddings_per_track: int = 4
    embedding_every_ms: float = 1500.0


@dataclass
class Track:
    """One continuous appearance of a face, inside one shot."""

    track_id: int
    frames: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    confirmed_len: int = 0  # frames up to the last one a detection found the face in
    misses: int = 0
    embeddings: list[np.ndarray] = field(default_factory=list)
    last_embedding_ms: float = -1e9
    thumb_score: float = -1.0
    thumb: np.ndarray | None = None  # padded RGB crop of the best frame so far
    # Frame index -> whether the detection that found the face there was the turned-face
    # detector's (HOG, which has frontal and slightly turned filters only, did not find
    # it): the 68-point shape is not a mouth to re-render there (faces.identify).
    turned_at: dict[int, bool] = field(default_factory=dict)
    turned_now: bool = False  # the last detection of it was the turned-face detector's
    # Detector box relative to the landmarks' box, learnt at detections, so that the
    # predictor is started from a box shaped like the ones it was trained on.
    box_ratio: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    def trim(self) -> None:
        """Drop frames after the last confirmation: they may be a drifted shape.

        Called for tracks that detections stopped confirming, and at a scene cut or the
        end of the video for one the last two detections missed; others keep their tail.
        """
        n = self.confirmed_len
        del self.frames[n:], self.times[n:], self.landmarks[n:]

    def row_of(self, frame: int) -> int | None:
        """Index of ``frame`` in this track (its frames are consecutive), or None."""
        row = frame - self.frames[0] if self.frames else -1
        return row if 0 <= row < len(self.frames) and self.frames[row] == frame else None


Box = tuple[float, float, float, float]


class Det(NamedTuple):
    """A detector's face box, and whether only the turned-face detector found it."""

    box: Box
    turned: bool = False


def _frontal(boxes: list[Box]) -> list[Det]:
    return [Det(b) for b in boxes]

# The smallest face box dlib's HOG detector finds, in the pixels of the picture it
# searches (its window is 80 px; measured, boxes from about 70 px are returned).
HOG_MIN_PX = 80.0
# HOG's threshold, lowered, for telling a turned face (HOG sees nothing) from one HOG
# missed for another reason (it still sees a weak face): a profile in the Hamilton clip
# scores nothing down to -0.6, vasp's three-quarter face at the panel's edge does.
WEAK_HOG = -0.5
# What feed() reports: a frame, a track id, and that track's landmarks on that frame.
Seen = tuple[Frame, int, np.ndarray]


@dataclass
class _Job:
    """A detection running in a worker thread, on frame ``at``, to be used at ``due``."""

    at: Frame
    due: int
    tracks: list[int] | None  # the tracks a confirmation looks around; None: whole frame
    boxes: Future[list[Det]]


def landmark_box(lm: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = lm.min(axis=0)
    x1, y1 = lm.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _rect(box: tuple[float, float, float, float]) -> Any:
    return dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])),
                          int(round(box[3])))


def _shape_array(shape: Any) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class FaceTracker:
    """Streaming tracker: feed frames in order, collect finished tracks."""

    def __init__(self, width: int, height: int, fps: float, settings: TrackerSettings):
        self.s = settings
        self.width, self.height, self.fps = width, height, fps
        self.scale = min(settings.max_upscale, settings.detect_long_side / max(width, height))
        # The smallest face (box side, frame pixels) the whole-frame search finds; below
        # it, down to min_face_px, the proposals search (when there is such a range).
        self.search_min_px = HOG_MIN_PX / self.scale
        self.small_search = self.search_min_px > settings.min_face_px
        self.smallest_px = float(min(self.search_min_px, settings.min_face_px))
        self.small_every = max(settings.detect_every, int(round(settings.small_every_s * fps)))
        self.turned_every = max(settings.detect_every,
                                int(round(settings.turned_every_s * fps)))
        self._last_small = 0  # the frame the last search for small faces ran on
        self._last_turned = 0  # the frame the last whole-frame search for turned faces ran on
        self.predictor = models.landmark_predictor()
        self.encoder = models.face_encoder()
        self.active: list[Track] = []
        self.finished: list[Track] = []
        self._next_id = 0
        self._prev_thumb: np.ndarray | None = None
        self.cuts: list[int] = []
        # dlib releases the GIL while it detects. One thread per kind, so a confirmation
        # never queues behind a search of the whole frame; each thread leases its own
        # detector (models.hog_detector).
        self._search_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipdub-hog")
        self._confirm_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipdub-confirm")
        self._jobs: list[_Job] = []  # by due frame, then submission
        # Consecutive frames of this shot, from look_back before the oldest job's frame.
        self._held: list[Frame] = []
        self.search_lag, self.look_back = settings.detect_lag, settings.look_back

    def _size_holding(self, frame: Frame) -> None:
        """Fit the held frames in ``held_bytes``: a decoded 4:2:0 picture is 1.5 bytes a
        pixel; a source the crops cannot edit in its planes (rotated, 10-bit, full range)
        also keeps an RGB and a grey copy per held frame."""
        px = frame.size[0] * frame.size[1]
        per = px * 3 // 2 if editable(frame.av_frame, frame.rotation) else px * 11 // 2
        room = max(self.s.held_bytes // max(per, 1), 8)
        self.search_lag = max(min(self.s.detect_lag, room // 2), self.s.confirm_lag)
        self.look_back = max(min(self.s.look_back, room - self.search_lag - 1), 0)

    # -- per frame ---------------------------------------------------------------------
    def feed(self, frame: Frame) -> list[Seen]:
        """Track ``frame``. Returns the landmarks now known: this frame's for every
        track, and earlier held frames' for a face that a detection has just found."""
        gray = frame.gray
        if frame.index == 0:
            self._size_holding(frame)
        cut = self._is_cut(gray)
        earlier: list[tuple[Frame, Track, int]] = []
        if cut:
            self.cuts.append(frame.index)
            earlier += self._drain()  # the last shot's detections, on its held frames
            self._end_all()
            self._held = []
        for tr in self.active:
            self._follow(tr, frame)
        self._held.append(frame)
        while self._jobs and self._jobs[0].due <= frame.index:
            earlier += self._use(self._jobs.pop(0))
        if cut or frame.index == 0:
            # A new shot starts with nobody tracked: search now, not a lag later.
            boxes = self._hog(gray)
            if self.small_search:
                boxes += self._small_faces(gray, boxes)
                self._last_small = frame.index
            dets = _frontal(boxes)
            if not dets:  # nobody frontal: a head in profile is still a face
                dets = self._turned_faces(frame)
                self._last_turned = frame.index
            earlier += self._discover(dets, [frame])
        else:
            if frame.index % self.s.confirm_every == 0 and self.active:
                rois = [self._surroundings(tr.landmarks[-1]) for tr in self.active]
                looks = [self._look(tr) for tr in self.active]
                self._add(_Job(frame, frame.index + self.s.confirm_lag,
                               [tr.track_id for tr in self.active],
                               self._confirm_pool.submit(self._search_around, frame, rois,
                                                         looks)))
            if frame.index % self.s.detect_every == 0:
                self._add(_Job(frame, frame.index + self.search_lag, None,
                               self._search_pool.submit(self._hog_dets, gray)))
            elif (frame.index % self.s.detect_every == self.s.detect_every // 4
                  and not self.active
                  and frame.index - self._last_turned >= self.turned_every):
                # Nobody tracked for a while: someone may be there in profile.
                self._last_turned = frame.index
                self._add(_Job(frame, frame.index + self.search_lag, None,
                               self._search_pool.submit(self._turned_faces, frame)))
            # Between two whole-frame searches (so the two do not queue in one thread),
            # small_every after the last one (a new shot's included).
            if (self.small_search and frame.index % self.s.detect_every
                    == self.s.detect_every // 2
                    and frame.index - self._last_small >= self.small_every):
                self._last_small = frame.index
                known = [landmark_box(tr.landmarks[-1]) for tr in self.active]
                self._add(_Job(frame, frame.index + self.search_lag, None,
                               self._search_pool.submit(self._small_dets, gray, known)))
        oldest = min([j.at.index for j in self._jobs] + [frame.index + 1])
        self._held = self._held_from(oldest - self.look_back)
        return self._seen(earlier, frame, self.active)

    def flush(self) -> list[Seen]:
        """At the end of the video: use the detections still running (faces they find
        are tracked through the held frames); returns those faces' landmarks."""
        found = self._drain()
        self._held = []
        return self._seen(found, None)

    def _drain(self) -> list[tuple[Frame, Track, int]]:
        found: list[tuple[Frame, Track, int]] = []
        while self._jobs:
            found += self._use(self._jobs.pop(0))
        return found

    def close(self) -> list[Track]:
        self.flush()
        self._search_pool.shutdown(wait=True)
        self._confirm_pool.shutdown(wait=True)
        self._end_all()
        return self.finished

    @staticmethod
    def _seen(found: list[tuple[Frame, Track, int]], frame: Frame | None,
              active: list[Track] | None = None) -> list[Seen]:
        """``found`` (new tracks' rows, up to ``frame`` included; a row a track lost since
        is left out), then ``frame`` for every other track in ``active``."""
        out = [(f, tr.track_id, tr.landmarks[row]) for f, tr, row in found
               if row < len(tr.frames)]
        new = {id(tr) for _, tr, _ in found}
        out += [(frame, tr.track_id, tr.landmarks[-1]) for tr in active or []
                if id(tr) not in new and frame is not None and tr.frames[-1] == frame.index]
        return out

    # -- detection jobs ----------------------------------------------------------------
    def _add(self, job: _Job) -> None:
        at = len(self._jobs)
        while at > 0 and self._jobs[at - 1].due > job.due:
            at -= 1
        self._jobs.insert(at, job)

    def _use(self, job: _Job) -> list[tuple[Frame, Track, int]]:
        boxes = job.boxes.result()
        window = self._held_from(job.at.index)
        assert window and window[0] is job.at, "a job's frame is held until it is used"
        if job.tracks is None:
            return self._discover(boxes, window)
        self._confirm_tracks(boxes, job.tracks, window)
        return []

    def _held_from(self, index: int) -> list[Frame]:
        return self._held[max(index - self._held[0].index, 0):] if self._held else []

    def _surroundings(self, lm: np.ndarray) -> tuple[tuple[int, int, int, int], float]:
        """A face's box with margins, and the scale that makes the face HOG-sized."""
        x0, y0, x1, y1 = landmark_box(lm)
        side = max(x1 - x0, y1 - y0, 1.0)
        m = self.s.confirm_margin * side
        # Clamped inside the picture (a drifting shape can leave it: then it is empty).
        ax0 = min(max(int(x0 - m), 0), self.width)
        ay0 = min(max(int(y0 - m), 0), self.height)
        roi = (ax0, ay0, min(max(int(x1 + m) + 1, ax0), self.width),
               min(max(int(y1 + m) + 1, ay0), self.height))
        return roi, min(self.s.roi_max_upscale, self.s.confirm_face_px / side)

    def _face_side(self, roi: tuple[tuple[int, int, int, int], float]) -> float:
        """The side of the face a region from _surroundings was made for, source px."""
        return self.s.confirm_face_px / roi[1]

    def _wider(self, roi: tuple[tuple[int, int, int, int], float]
               ) -> tuple[tuple[int, int, int, int], float]:
        """``roi`` grown by a quarter of its side each way, same scale: on a turned head
        the predictor's shape drifts (a profile is not the shape it knows), so the face
        may lie partly outside the box it gives by the next confirmation."""
        (x0, y0, x1, y1), sc = roi
        gx, gy = (x1 - x0) // 4, (y1 - y0) // 4
        return ((max(x0 - gx, 0), max(y0 - gy, 0), min(x1 + gx, self.width),
                 min(y1 + gy, self.height)), sc)

    # -- internals ---------------------------------------------------------------------
    def _is_cut(self, gray: np.ndarray) -> bool:
        # Subsample before the area resize: a cut changes whole regions, not pixels.
        small = cv2.resize(gray[::8, ::8], (16, 9), interpolation=cv2.INTER_AREA).astype(np.int16)
        prev, self._prev_thumb = self._prev_thumb, small
        if prev is None:
            return False
        changed = float(np.mean(np.abs(small - prev) > 40))
        return changed >= self.s.cut_threshold

    def _end(self, tr: Track, lost: bool = False) -> None:
        if lost:
            tr.trim()
        if tr.frames:
            self.finished.append(tr)

    def _end_all(self) -> None:
        """End every track (a scene cut, the end of the video). One the last two
        detections missed ends where it was last found (checked frame by frame at the
        first miss); the others keep their tail (a single miss is often the detector
        flickering on a turned head: vasp's right face at the end)."""
        for tr in self.active:
            self._end(tr, lost=tr.misses >= 2)
        self.active = []

    def _predict(self, gray: np.ndarray, box: Box) -> np.ndarray:
        """68 landmarks for the face in ``box``, in full-frame pixels.

        On the frame itself, whatever the face's size: the predictor's cost does not grow
        with the face (it reads a fixed set of pixels), and measured on real 720p-4K
        close-ups (bench/predictor_ab.py) the full-resolution face both ran faster than a
        crop reduced to 200 px (the reduction itself cost more than the prediction) and
        jittered less (second difference of the stable points 0.007-0.008 against 0.010
        inter-ocular distances).
        """
        return _shape_array(self.predictor(gray, _rect(box)))

    def _turned_shape(self, gray: np.ndarray, box: Box) -> np.ndarray:
        """A turned face's 68 points: the predictor's, stretched to fill the detector's
        box. They are never a mouth to render (faces.turned marks these frames); they
        carry the face's place and size, which the predictor's own shape, squeezed to
        half the face on a profile, does not."""
        lm = self._predict(gray, box)
        lx0, ly0, lx1, ly1 = landmark_box(lm)
        sx = (box[2] - box[0]) / max(lx1 - lx0, 1.0)
        sy = (box[3] - box[1]) / max(ly1 - ly0, 1.0)
        return np.stack([box[0] + (lm[:, 0] - lx0) * sx,
                         box[1] + (lm[:, 1] - ly0) * sy], axis=1).astype(np.float32)

    def _follow(self, tr: Track, frame: Frame) -> None:
        if tr.turned_now:
            # The predictor does not know a profile: from one frame to the next its shape
            # shrinks off the face (Hamilton's close-up: to half its width in three
            # frames). The turned face's box is held until the next detection moves it.
            lm = tr.landmarks[-1].copy()
        else:
            lm = self._predict(frame.gray,
                               _carry(tr.box_ratio, landmark_box(tr.landmarks[-1])))
        tr.frames.append(frame.index)
        tr.times.append(frame.time_ms)
        tr.landmarks.append(lm)

    def _hog(self, gray: np.ndarray) -> list[Box]:
        """A search of the whole frame, at the detection scale."""
        return self._hog_rois(gray, [((0, 0, gray.shape[1], gray.shape[0]), self.scale)])

    def _hog_dets(self, gray: np.ndarray) -> list[Det]:
        return _frontal(self._hog(gray))

    def _small_dets(self, gray: np.ndarray, known: list[Box]) -> list[Det]:
        return _frontal(self._small_faces(gray, known))

    def _look(self, tr: Track) -> str:
        """How a track is searched for where HOG misses it: "turned" (the CNN found it
        last: two scales, a wider region), "turning" (its head is turned past
        ``turning_yaw``: the CNN at one scale) or "hog" (a frontal face HOG missed is
        blurred or covered, not turned: HOG's miss stands)."""
        if tr.turned_now:
            return "turned"
        yaw = float(head_pose(tr.landmarks[-1], self.width, self.height)[0])
        return "turning" if abs(yaw) > self.s.turning_yaw else "hog"

    def _search_around(self, frame: Frame,
                       rois: list[tuple[tuple[int, int, int, int], float]],
                       looks: list[str]) -> list[Det]:
        """Each region searched by HOG; where HOG finds nothing, by the turned-face
        detector (a head turned past HOG's filters, or in profile) as ``looks`` says
        (one per region, see _look)."""
        out: list[Det] = []
        for roi, look in zip(rois, looks, strict=True):
            found = self._hog_rois(frame.gray, [roi])
            if found or look == "hog" or self._face_side(roi) < self.s.turned_min_px:
                out += _frontal(found)
                continue
            # HOG misses faces that are not turned too (blurred, cut by the frame's
            # edge, dim): the CNN's face counts as turned only if HOG, with its threshold
            # lowered, sees no face there either; a profile gives it nothing at all.
            weak = self._hog_rois(frame.gray, [roi], threshold=WEAK_HOG)
            cnn = (self._mmod_rois(frame, [self._wider(roi)]) if look == "turned"
                   else self._mmod_rois(frame, [roi], face_px=self.s.turned_face_px[:1]))
            out += [Det(d.box, turned=all(iou(d.box, w) < self.s.match_iou for w in weak))
                    for d in cnn]
        return out

    def _mmod_rois(self, frame: Frame,
                   rois: list[tuple[tuple[int, int, int, int], float]],
                   face_px: tuple[float, ...] | None = None) -> list[Det]:
        """dlib's CNN detector on each region, scaled so the face is each of ``face_px``
        (default ``turned_face_px``) until it finds one (a region's scale was chosen for
        HOG's ``confirm_face_px``); boxes in frame pixels."""
        gray = frame.gray
        out: list[Det] = []
        with models.mmod_detector() as detector:
            for (x0, y0, x1, y1), base in rois:
                for px in face_px or self.s.turned_face_px:
                    sc = base * px / self.s.confirm_face_px
                    if min(x1 - x0, y1 - y0) * sc < 40:
                        continue
                    small = cv2.resize(gray[y0:y1, x0:x1], None, fx=sc, fy=sc,
                                       interpolation=cv2.INTER_AREA if sc < 1
                                       else cv2.INTER_LINEAR)
                    boxes = [(d.rect.left() / sc + x0, d.rect.top() / sc + y0,
                              d.rect.right() / sc + x0, d.rect.bottom() / sc + y0)
                             for d in detector(small, 0)]
                    found = [Det(b, turned=True) for b in boxes
                             if min(b[2] - b[0], b[3] - b[1]) >= self.s.min_face_px]
                    if found:
                        out += found
                        break
        return out

    def _turned_faces(self, frame: Frame) -> list[Det]:
        """The turned-face detector on the whole frame reduced to ``turned_long_side``:
        faces from a quarter of that side (80 px there), as a talking head is."""
        sc = min(1.0, self.s.turned_long_side / max(self.width, self.height))
        return self._mmod_rois(frame, [((0, 0, self.width, self.height), sc)],
                               face_px=(self.s.confirm_face_px,))

    def _hog_rois(self, gray: np.ndarray,
                  rois: list[tuple[tuple[int, int, int, int], float]],
                  threshold: float = 0.0) -> list[Box]:
        """HOG on each region resized by its scale; boxes in frame pixels. ``threshold``
        moves dlib's decision threshold (negative: weaker faces too)."""
        out: list[Box] = []
        with models.hog_detector() as detector:
            for (x0, y0, x1, y1), sc in rois:
                if min(x1 - x0, y1 - y0) * sc < 40:  # under half HOG's window: nothing there
                    continue
                small = cv2.resize(gray[y0:y1, x0:x1], None, fx=sc, fy=sc,
                                   interpolation=cv2.INTER_AREA if sc < 1 else cv2.INTER_LINEAR)
                found = (detector(small, 0) if threshold == 0.0
                         else detector.run(small, 0, threshold)[0])
                out += [(d.left() / sc + x0, d.top() / sc + y0, d.right() / sc + x0,
                         d.bottom() / sc + y0) for d in found]
        return [d for d in out if min(d[2] - d[0], d[3] - d[1]) >= self.s.min_face_px]

    def _small_faces(self, gray: np.ndarray, known: list[Box]) -> list[Box]:
        """Faces between ``min_face_px`` and what the whole-frame search sees: Haar
        proposals on a picture where the smallest face is ``proposal_px``, each kept only
        if HOG, around it at the scale its size needs, finds a face (the cascade also
        fires on textures). ``known``: boxes found already (not proposed again)."""
        s = min(1.0, self.s.proposal_px / self.s.min_face_px)
        small = (cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
                 if s < 1 else gray.copy())
        # Where a known face is, no other face is: flat there, the cascade's first stage
        # rejects every window at once (a talking head's face is a third of the frame).
        for x0, y0, x1, y1 in known:
            g = 0.1 * (x1 - x0)
            small[max(int((y0 - g) * s), 0):max(int((y1 + g) * s), 0),
                  max(int((x0 - g) * s), 0):max(int((x1 + g) * s), 0)] = 128
        biggest = int(self.search_min_px * 1.5 * s)
        with models.haar_cascade() as cascade:
            found = cascade.detectMultiScale(small, scaleFactor=1.2, minNeighbors=3,
                                             minSize=(self.s.proposal_px,) * 2,
                                             maxSize=(biggest, biggest))
        rois = []
        for x, y, w, h in (np.asarray(found).reshape(-1, 4) / s):
            box = (float(x), float(y), float(x + w), float(y + h))
            if any(iou(box, k) > 0.1 for k in known):
                continue
            # The cascade's box is tighter than HOG's landmarks' box: grown a little.
            rois.append(self._surroundings(np.array([[x - 0.1 * w, y], [x + 1.1 * w, y + h]])))
        out: list[Box] = []
        for d in self._hog_rois(gray, rois):
            if all(iou(d, o) <= 0.3 for o in out):  # overlapping proposals, one face
                out.append(d)
        return out

    def _confirm_tracks(self, dets: list[Det], tracks: list[int],
                        window: list[Frame]) -> None:
        """Match ``dets``, found around ``tracks`` on ``window[0]``, against those tracks
        there; ``window[-1]`` is now."""
        at = window[0]
        judged: list[tuple[Track, int, Box]] = []
        for tr in self.active:
            row = tr.row_of(at.index)
            if row is not None and tr.track_id in tracks:
                judged.append((tr, row, landmark_box(tr.landmarks[row])))
        # Greedy matching by IoU: faces rarely overlap, so greedy equals optimal here.
        pairs = sorted(((iou(tb, d.box), ti, di) for ti, (_, _, tb) in enumerate(judged)
                        for di, d in enumerate(dets)), reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        for score, ti, di in pairs:
            if score < self.s.match_iou or ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            tr, row, tb = judged[ti]
            self._confirm(tr, dets[di], tb, row, window[-1])
        lost = {id(tr) for ti, (tr, row, _) in enumerate(judged)
                if ti not in used_t and self._missed(tr, row)}
        self.active = [tr for tr in self.active if id(tr) not in lost]

    def _missed(self, tr: Track, row: int) -> bool:
        """A detection missed ``tr`` at ``row``; True if that ended it."""
        tr.misses += 1
        if tr.misses == 1:
            self._confirm_until(tr, row)
        if tr.misses > self.s.max_misses:
            self._end(tr, lost=True)
            return True
        return False

    def _confirm_until(self, tr: Track, row: int) -> None:
        """At a first miss (at ``row``): check the frames since the last confirmation one
        by one while they are held, so that a face that leaves is confirmed up to the
        frame it left on, not to the confirmation before."""
        for r in range(tr.confirmed_len, row):
            i = tr.frames[r] - self._held[0].index
            hit = None if i < 0 else self._around(self._held[i], tr.landmarks[r])
            if hit is None:
                return
            tr.confirmed_len = r + 1
            tr.turned_at[tr.frames[r]] = hit.turned

    def _discover(self, dets: list[Det], window: list[Frame]) -> list[tuple[Frame, Track, int]]:
        """Start tracks for the faces in ``dets`` (a search of ``window[0]``) that no track
        covers there. Returns the held frames, with track and row, of the new tracks."""
        at = window[0]
        near = self._near(self._held[0].index)
        taken = self._boxes_on(near, at.index)
        found: list[tuple[Frame, Track, int]] = []
        for d in dets:
            if any(iou(tb, d.box) > 0.1 for tb in taken):
                continue  # a track's face (the detector may place its box differently)
            new = self._start(d, window, near)
            taken.append(d.box)
            if new.misses <= self.s.max_misses:
                self.active.append(new)
            first = new.frames[0] - self._held[0].index
            found += [(f, new, row) for row, f in enumerate(self._held[first:])]
        return found

    def _near(self, since: int) -> list[Track]:
        """Tracks, going on or ended, with frames from ``since`` on: those a new track
        could share a held frame with."""
        return self.active + [tr for tr in self.finished if tr.frames[-1] >= since]

    @staticmethod
    def _boxes_on(tracks: list[Track], index: int) -> list[Box]:
        return [landmark_box(tr.landmarks[row]) for tr in tracks
                if (row := tr.row_of(index)) is not None]

    def _start(self, det: Det, window: list[Frame], near: list[Track]) -> Track:
        """A track for a face found at ``det`` on ``window[0]``.

        It is first followed back through the held frames before, while a detection
        around it still finds it on each. Then forward through the rest of ``window`` as
        it would have been live: followed, and confirmed around itself every
        ``confirm_every`` frames and on the last one (later detections of it are a lag
        away). If those confirmations lose it, it has ended (``misses`` says so)."""
        at = window[0]
        tr = Track(track_id=self._next_id)
        self._next_id += 1
        lm = (self._turned_shape(at.gray, det.box) if det.turned
              else self._predict(at.gray, det.box))
        back = self._look_back(lm, det.box, self._held[:at.index - self._held[0].index], near,
                               turned=det.turned)
        for f, b, turned in [*back, (at, lm, det.turned)]:
            tr.frames.append(f.index)
            tr.times.append(f.time_ms)
            tr.landmarks.append(b)
            tr.turned_at[f.index] = turned
        self._confirm(tr, det, landmark_box(lm), len(back), at, new=True)
        for f in window[1:]:
            self._follow(tr, f)
            if f.index % self.s.confirm_every == 0 or f is window[-1]:
                tb = landmark_box(tr.landmarks[-1])
                hit = self._around(f, tr.landmarks[-1], self._look(tr))
                if hit is not None:
                    self._confirm(tr, hit, tb, len(tr.frames) - 1, f)
                elif self._missed(tr, len(tr.frames) - 1):
                    return tr
        return tr

    def _look_back(self, lm: np.ndarray, det: Box, before: list[Frame],
                   near: list[Track], turned: bool = False
                   ) -> list[tuple[Frame, np.ndarray, bool]]:
        """The face at ``lm`` (found at ``det``) on the frames ``before`` it, back to the
        first one the detector, run around it, no longer finds it on, or where a track in
        ``near`` already has it (one that ended there: the same face must not be two
        tracks on one frame, which would make it two people); oldest first."""
        out: list[tuple[Frame, np.ndarray, bool]] = []
        tb = landmark_box(lm)
        ratio = _ratio(det, tb)
        for f in reversed(before[-self.look_back:] if self.look_back > 0 else []):
            # A turned face's box is held (the predictor does not follow a profile).
            guess = lm if turned else self._predict(f.gray, _carry(ratio, tb))
            # A turned face is looked for by the CNN too (once per new turned face: a
            # turned face a search found was often seen for most of a second before).
            hit = self._around(f, guess, "turned" if turned else "hog")
            if hit is None:
                break
            # Seated on the detector's box, as at a search.
            lm = (self._turned_shape(f.gray, hit.box) if hit.turned
                  else self._predict(f.gray, hit.box))
            tb = landmark_box(lm)
            if any(iou(tb, b) > 0.1 for b in self._boxes_on(near, f.index)):
                break
            out.append((f, lm, hit.turned))
        return out[::-1]

    def _around(self, frame: Frame, lm: np.ndarray, look: str = "hog") -> Det | None:
        """The detector's box for the face at ``lm`` on ``frame``, searched around it by
        HOG, and by the turned-face detector as ``look`` says (_look: a confirmation
        as the live ones are; the frame-by-frame checks of a span's ends use HOG alone:
        the CNN costs 50 times as much, so a turned face's span may start or end up to
        a confirmation's interval short of where it is seen)."""
        tb = landmark_box(lm)
        found = self._search_around(frame, [self._surroundings(lm)], [look])
        hits = [d for d in found if iou(tb, d.box) >= self.s.match_iou]
        return max(hits, key=lambda d: iou(tb, d.box)) if hits else None

    def _confirm(self, tr: Track, found: Det, tb: Box, row: int, now: Frame,
                 new: bool = False) -> None:
        """A detection ``found`` found ``tr`` at ``row``, where its landmark box was
        ``tb``; ``now`` is the track's last frame."""
        tr.misses = 0
        tr.confirmed_len = row + 1
        tr.turned_at[tr.frames[row]] = found.turned
        tr.turned_now = found.turned
        det = found.box
        ratio = _ratio(det, tb)
        if new:
            tr.box_ratio, box, lm = ratio, det, tr.landmarks[-1]
        elif found.turned:
            # On a turned head the predictor's shape drifts off the face within a few
            # frames: it is re-seated on the CNN's box (carried to now by the track's
            # motion) at every confirmation. The box the tracking starts the predictor
            # from stays HOG's (the CNN's boxes are shaped unlike those it was trained on).
            box = _carry(ratio, landmark_box(tr.landmarks[-1]))
            lm = tr.landmarks[-1] = self._turned_shape(now.gray, box)
        else:
            # The detector's box, carried from the frame it was found in to now by the
            # track's own motion; the shape is re-seated on it only where the two
            # disagree, which corrects a drift without adding noise: a search scaled to a
            # 100 px face gives boxes 8 px coarse there (28 px on a 350 px face), and
            # re-seating on every one made the mouth points jump every 6 frames
            # (bench/quality.py r_dub on videoretalking face_4: 0.39, 0.61 this way,
            # 0.62 with the former whole-frame searches).
            box = _carry(ratio, landmark_box(tr.landmarks[-1]))
            lm = tr.landmarks[-1]
            if iou(box, _carry(tr.box_ratio, landmark_box(lm))) < self.s.reseat_iou:
                lm = tr.landmarks[-1] = self._predict(now.gray, box)
            tr.box_ratio = tuple(  # type: ignore[assignment]
                0.7 * a + 0.3 * b for a, b in zip(tr.box_ratio, ratio, strict=True))
        want_emb = (
            # A turned face's embedding is another person's as much as its own: a
            # turned-only track stays a person of its own rather than merge wrongly.
            not found.turned
            and len(tr.embeddings) < self.s.embeddings_per_track
            and now.time_ms - tr.last_embedding_ms >= self.s.embedding_every_ms
        )
        gray = now.gray
        # A turned face's stretched shape reads as frontal: its thumbnail is the first
        # one only when the person was never seen otherwise.
        score = (self._thumb_score(gray, lm) if not found.turned or tr.thumb is None
                 else -1.0)
        if want_emb or score > tr.thumb_score:
            rgb = now.rgb
            if want_emb:
                shape = self.predictor(gray, _rect(box))  # the encoder wants dlib's own shape
                desc = self.encoder.compute_face_descriptor(np.ascontiguousarray(rgb), shape)
                tr.embeddings.append(np.asarray(desc, dtype=np.float32))
                tr.last_embedding_ms = now.time_ms
            if score > tr.thumb_score:
                tr.thumb_score = score
                tr.thumb = padded_crop(rgb, landmark_box(lm), pad=0.45)

    def _thumb_score(self, gray: np.ndarray, lm: np.ndarray) -> float:
        """Big, sharp and frontal wins: size x sharpness x frontalness."""
        x0, y0, x1, y1 = (int(v) for v in landmark_box(lm))
        x0, y0 = max(x0, 0), max(y0, 0)
        crop = gray[y0:y1, x0:x1]
        if crop.size < 64:
            return 0.0
        sharp = float(cv2.Laplacian(crop, cv2.CV_32F).var())
        yaw, pitch, _ = head_pose(lm, self.width, self.height)
        frontal = max(0.0, np.cos(np.radians(yaw))) * max(0.0, np.cos(np.radians(pitch)))
        size = float(np.sqrt(crop.size))
        return size * np.log1p(sharp) * frontal**2


def _ratio(det: Box, tb: Box) -> tuple[float, float, float, float]:
    """Detector box ``det`` relative to landmark box ``tb`` (the inverse of _carry)."""
    x0, y0, x1, y1 = tb
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    return (det[0] - x0) / w, (det[1] - y0) / h, (det[2] - x0) / w, (det[3] - y0) / h


def _carry(ratio: tuple[float, float, float, float], tb: Box) -> Box:
    """The box at ``ratio`` of landmark box ``tb`` (a detector's box, as learnt)."""
    x0, y0, x1, y1 = tb
    w, h = x1 - x0, y1 - y0
    return (x0 + ratio[0] * w, y0 + ratio[1] * h, x0 + ratio[2] * w, y0 + ratio[3] * h)


def padded_crop(rgb: np.ndarray, box: tuple[float, float, float, float], pad: float) -> np.ndarray:
    """A square crop around ``box`` with ``pad`` of its size added on each side."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (0.5 + pad)
    h, w = rgb.shape[:2]
    a0, b0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    a1, b1 = int(min(cx + half, w)), int(min(cy + half, h))
    return rgb[b0:b1, a0:a1].copy()

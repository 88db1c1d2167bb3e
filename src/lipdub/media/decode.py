"""Decoding: upright, plain 8-bit 4:2:0 frames streamed in presentation order.

Frames are streamed one at a time so memory stays flat with video length. Every frame is
handed on as the picture a player shows: upright (the display matrix phones write is
applied), with even sides (an odd size is padded with its last row or column: 4:2:0
needs even sides, and cropping would lose picture), as 8-bit 4:2:0 at the source's own
range and matrix (10-bit, 4:2:2, 4:4:4, NV12 and JPEG-range sources are converted here
once, by libswscale with exact rounding, never through RGB). So the layers above read one
kind of picture, the renderer edits every source in place of its planes, and a frame
nobody edits goes to the encoder with its levels as they were. Timestamps come from the
container, so variable frame rates work; frames an edit list discards are dropped by
the decoder, and time 0 is the first presented frame.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation

from lipdub.errors import LimitError, MediaError
from lipdub.media.pools import usable_cores
from lipdub.media.probe import MAX_PIXELS, frame_rotation, open_video

# 8-bit pixel formats whose first plane is full-resolution luma.
_LUMA_FIRST = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                         "nv12", "nv21"})


# Chroma resampling for 4:2:2 / 4:4:4 sources as FFmpeg's own tools do it (bicubic),
# rounded exactly: without ACCURATE_RND libswscale's fast paths lose up to a level.
_SCALE = Interpolation.BICUBIC | Interpolation.ACCURATE_RND


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The three planes of an 8-bit 4:2:0 frame (views, without the line padding)."""
    h, w = frame.height, frame.width
    sizes = [(h, w), ((h + 1) // 2, (w + 1) // 2), ((h + 1) // 2, (w + 1) // 2)]
    out = []
    for p, (ph, pw) in zip(frame.planes, sizes, strict=True):
        out.append(np.frombuffer(memoryview(p), np.uint8).reshape(-1, p.line_size)[:ph, :pw])
    return out


def plain_frame(frame: av.VideoFrame, rotation: int = 0) -> av.VideoFrame:
    """``frame`` as upright, even-sided yuv420p at its own range, matrix and tags (the
    frame itself when it is that already)."""
    fmt = frame.format.name
    w, h = frame.width, frame.height
    if fmt == "yuv420p" and not rotation and not (w % 2 or h % 2):
        return frame
    rng = 2 if fmt.startswith("yuvj") else int(frame.color_range or 0)
    if fmt in ("yuv420p", "yuvj420p"):  # the same planes; only the layout changes below
        src = frame
    else:
        r = rng or None  # unspecified: libswscale's default, video levels
        src = frame.reformat(format="yuv420p", interpolation=_SCALE,
                             src_color_range=r, dst_color_range=r)
    y, u, v = _planes(src)
    if w % 2 or h % 2:  # pad with the last row / column (the chroma already covers it)
        y = np.pad(y, ((0, h % 2), (0, w % 2)), mode="edge")
    k = (rotation // 90) % 4
    if k:
        y, u, v = (np.rot90(p, k) for p in (y, u, v))
    hh, ww = y.shape
    buf = np.empty(hh * ww * 3 // 2, np.uint8)
    q = hh * ww // 4
    buf[: hh * ww].reshape(hh, ww)[:] = y
    buf[hh * ww : hh * ww + q].reshape(hh // 2, ww // 2)[:] = u
    buf[hh * ww + q :].reshape(hh // 2, ww // 2)[:] = v
    out = av.VideoFrame.from_ndarray(buf.reshape(hh * 3 // 2, ww), format="yuv420p")
    out.color_range = rng
    out.colorspace = frame.colorspace
    out.color_primaries = frame.color_primaries
    out.color_trc = frame.color_trc
    return out



class Frame:
    """One decoded frame; pixels are converted on demand (upright, rotation applied).

    Converting only what a caller needs matters: the tracker runs on grey and asks for
    RGB on the few frames it takes embeddings or thumbnails from.
    """

    __slots__ = ("index", "time_ms", "pts", "_frame", "_rotation", "_rgb", "_gray")

    def __init__(self, index: int, time_ms: float, pts: int | None, frame: av.VideoFrame,
                 rotation: int) -> None:
        self.index = index
        self.time_ms = time_ms  # presentation time from the start of the video
        self.pts = pts  # source timestamp in the stream's time base, for re-encoding
        self._frame = frame
        self._rotation = rotation
        self._rgb: np.ndarray | None = None
        self._gray: np.ndarray | None = None

    @property
    def av_frame(self) -> av.VideoFrame:
        return self._frame

    @property
    def rotation(self) -> int:
        return self._rotation

    @property
    def size(self) -> tuple[int, int]:
        """Upright (width, height), rotation applied, without converting any pixels."""
        w, h = self._frame.width, self._frame.height
        return (h, w) if self._rotation in (90, 270) else (w, h)

    @property
    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            f = self._frame
            # A plain frame keeps a full range as a tag that libswscale reads only when told.
            full = f.color_range == 2 and f.format.name == "yuv420p"
            self._rgb = _upright(f.to_ndarray(format="rgb24",
                                              src_color_range=2 if full else None),
                                 self._rotation)
        return self._rgb

    def planes(self) -> list[np.ndarray] | None:
        """The Y, U and V planes (views, no copy) of an upright 8-bit 4:2:0 frame (every
        frame the decoder hands on); None for a raw one of another kind."""
        f = self._frame
        if f.format.name != "yuv420p" or self._rotation:
            return None
        return _planes(f)

    @property
    def gray(self) -> np.ndarray:
        """Luma: the Y plane itself for 8-bit YUV sources (no conversion), else converted."""
        if self._gray is None:
            f = self._frame
            if f.format.name in _LUMA_FIRST:
                plane = f.planes[0]
                buf = memoryview(plane)
                y = np.frombuffer(buf, np.uint8).reshape(f.height, plane.line_size)
                g: np.ndarray = y[:, : f.width]
            else:
                g = f.to_ndarray(format="gray")
            self._gray = _upright(g, self._rotation)
        return self._gray




def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def iter_frames(
    path: str | Path,
    *,
    progress: Callable[[int], None] | None = None,
    prefetch: int | None = None,
    rgb_for: Callable[[int], bool] | None = None,
    raw: bool = False,
) -> Iterator[Frame]:
    """Yield upright frames in presentation order, streaming.

    Decoding runs in a thread ``prefetch`` frames ahead: PyAV releases the GIL while it
    decodes, so on two cores decoding overlaps with whatever the caller does per frame.
    Memory holds at most ``prefetch + 1`` frames. Frames whose index ``rgb_for`` accepts
    are converted to RGB in that thread too (the conversion also releases the GIL).
    ``raw``: the decoder's own frames, not made plain (for comparisons with the source).
    """
    if prefetch is not None and prefetch <= 0:
        yield from _decode(path, progress, raw)
        return
    # With no prefetch given, the queue is sized by the first frame's picture (below).
    q: queue.Queue[object] = queue.Queue(maxsize=prefetch or 1)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for fr in _decode(path, progress, raw):
                if prefetch is None and fr.index == 0:
                    with q.mutex:  # nothing is queued yet: the depth can still change
                        q.maxsize = queue_depth(*fr.size, most=4)
                if rgb_for is not None and rgb_for(fr.index):
                    _ = fr.rgb
                while not stop.is_set():
                    try:
                        q.put(fr, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    worker = threading.Thread(target=produce, name="lipdub-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def _decode(path: str | Path, progress: Callable[[int], None] | None,
            raw: bool = False) -> Iterator[Frame]:
    container = open_video(path)
    name = Path(path).name
    try:
        if not container.streams.video:
            raise MediaError(f"{name} has no video stream.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decode is otherwise one core
        # One frame thread per core (FFmpeg's default is one more): each holds a picture in
        # flight, 12 MB at 4K, for no speed on a machine whose cores are otherwise busy.
        stream.codec_context.thread_count = usable_cores()
        tb = stream.time_base or Fraction(1, 90000)
        first_pts: int | None = None
        index = 0
        try:
            for frame in container.decode(stream):
                if frame.width * frame.height > MAX_PIXELS:
                    raise LimitError(f"{name} has frames larger than 4096x4096.")
                pts = frame.pts
                if pts is not None and first_pts is None:
                    first_pts = pts
                if pts is not None and first_pts is not None:
                    t_ms = float((pts - first_pts) * tb) * 1000.0
                else:
                    rate = float(stream.average_rate or 25)
                    t_ms = index * 1000.0 / rate
                rot = frame_rotation(frame)
                yield Frame(index, t_ms, pts, frame if raw else plain_frame(frame, rot),
                            rot if raw else 0)
                index += 1
                if progress is not None:
                    progress(index)
        except av.error.FFmpegError as e:
            if index == 0:
                raise MediaError(f"{name} could not be decoded: {e.strerror or e}.") from e
            # A truncated tail: keep what decoded, as players do.
        if index == 0:
            raise MediaError(f"{name} has a video stream with no decodable frames.")
    finally:
        container.close()



def queue_depth(width: int, height: int, budget_mb: float = 26.0, most: int = 6) -> int:
    """Frames a queue between threads may hold: ``most``, fewer for large pictures so
    that a queue of yuv420p frames stays within ``budget_mb`` (at least 2 to overlap)."""
    frame_mb = width * height * 1.5 / 2**20
    return int(max(2, min(most, budget_mb // max(frame_mb, 1e-6))))


__all__ = ["Frame", "iter_frames", "plain_frame", "queue_depth"]

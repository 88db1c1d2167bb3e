"""Video in and out with PyAV: probe, stream upright frames, encode H.264 + AAC mp4.

Frames are streamed one at a time so memory stays flat with video length. Rotation
metadata (the display matrix phones write) is applied, so every layer above sees the
picture upright. Timestamps come from the container, so variable frame rates work.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lipdub.errors import LimitError, MediaError

# libx264 settings. The encoder is the largest cost of a render, so they were measured
# (bench/encoders.py, docs/benchmarks.md: 5 real clips + 2 talking heads at 720p/1080p)
# against the loss they add (PSNR and SSIM of luma against the decoded source): this is the
# fastest setting found whose loss is no worse than the former "veryfast" CRF 18 on any clip
# (within 0.1 dB / 0.0005 SSIM), at ~0.5x its encoder CPU and 1.56x its bits. It is
# "superfast" with veryfast's macroblock tree over a 10-frame look-ahead put back (it gives
# a static background the bits that keep it as clean as the source) and one B-frame, not
# three: as good, and fewer frames held in the encoder (memory that matters at 4K). Plain
# superfast at CRF 20 was as fast but lost 1.9 dB on the small vasp clip.
DEFAULT_PRESET = "superfast"
DEFAULT_CRF = 16
DEFAULT_X264_PARAMS = "mbtree=1:rc-lookahead=10:bframes=1"
# Above 1080p the look-ahead is 8 frames: each frame of it is a whole picture (12 MB at
# 4K) and x264's analysis of it, and a 4K sync peaked at 930-1004 MiB with 10 against its
# 1 GB budget (906 with 8, one run of bench/speed.py 4K60). It is judged where
# bench/encoders.py measures, which is never above 1080p: on those clips 8 frames cost
# 0.16 dB of PSNR against 10 and stay within the rule above (+0.70 dB mean, +0.18 worst
# against veryfast CRF 18; SSIM worst -0.0003); 6 frames did not.
LARGE_PICTURE_X264_PARAMS = "mbtree=1:rc-lookahead=8:bframes=1"
LARGE_PICTURE = 1920 * 1088  # pixels: bigger than 1080p


def x264_params_for(width: int, height: int) -> str:
    """The default x264 parameters for a picture of this size (see above)."""
    return LARGE_PICTURE_X264_PARAMS if width * height > LARGE_PICTURE else DEFAULT_X264_PARAMS


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, as a container pins it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


# The largest picture we agree to decode: 4K plus margin. Guards memory against
# crafted headers that claim enormous sizes.
MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video, as decoded (rotation already applied to width/height)."""

    path: str
    duration_ms: int
    fps: float
    width: int
    height: int
    frame_count: int
    has_audio: bool
    rotation: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "duration_ms": self.duration_ms,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "frame_count": self.frame_count,
            "has_audio": self.has_audio,
            "rotation": self.rotation,
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> VideoInfo:
        return cls(
            path=str(d["path"]),
            duration_ms=int(d["duration_ms"]),  # type: ignore[call-overload]
            fps=float(d["fps"]),  # type: ignore[arg-type]
            width=int(d["width"]),  # type: ignore[call-overload]
            height=int(d["height"]),  # type: ignore[call-overload]
            frame_count=int(d["frame_count"]),  # type: ignore[call-overload]
            has_audio=bool(d["has_audio"]),
            rotation=int(d.get("rotation", 0)),  # type: ignore[call-overload]
        )


# 8-bit pixel formats whose first plane is full-resolution luma.
_LUMA_FIRST = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                         "nv12", "nv21"})


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
            self._rgb = _upright(self._frame.to_ndarray(format="rgb24"), self._rotation)
        return self._rgb

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


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"Video file not found: {p}.")
    if p.stat().st_size == 0:
        raise MediaError(f"{p.name} is empty (0 bytes): upload the video again.")
    try:
        return av.open(str(p), mode="r")
    except av.error.InvalidDataError as e:
        raise MediaError(
            f"{p.name} is not a readable video: it is not a known media format, "
            "or it is truncated or corrupt."
        ) from e
    except av.error.EOFError as e:
        raise MediaError(f"{p.name} has no frames: the file ends before the first picture.") from e
    except av.error.FFmpegError as e:
        raise MediaError(f"{p.name} could not be opened: {e.strerror or e}.") from e


def _rotation_of(stream: av.video.stream.VideoStream,
                 container: av.container.InputContainer) -> int:
    """Counter-clockwise display rotation in degrees (0, 90, 180, 270), from the first frame."""
    try:
        for frame in container.decode(stream):
            return int(round(getattr(frame, "rotation", 0) or 0)) % 360
    except av.error.FFmpegError:
        return 0
    return 0


def probe(path: str | Path, *, max_duration_ms: int | None = None) -> VideoInfo:
    """Read a video's facts without decoding pictures (packets are counted, not decoded)."""
    container = _open(path)
    name = Path(path).name
    try:
        if not container.streams.video:
            kind = "audio-only file" if container.streams.audio else "file without a video stream"
            raise MediaError(f"{name} is an {kind}: a video with a picture track is required.")
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise MediaError(f"{name} has a video stream without a picture size: it is corrupt.")
        if width * height > MAX_PIXELS:
            raise LimitError(
                f"{name} is {width}x{height}: larger than 4096x4096 is not supported."
            )
        tb = stream.time_base or Fraction(1, 90000)
        count = 0
        first: int | None = None
        last_end: int | None = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                count += 1
                end = packet.pts + (packet.duration or 0)
                first = packet.pts if first is None else min(first, packet.pts)
                last_end = end if last_end is None else max(last_end, end)
        except av.error.FFmpegError as e:
            raise MediaError(f"{name} is truncated or corrupt: {e.strerror or e}.") from e
        if count == 0 or first is None or last_end is None:
            raise MediaError(f"{name} has a video stream with no frames.")
        duration_ms = int(round(float((last_end - first) * tb) * 1000))
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else count * 1000.0 / max(duration_ms, 1)
        if duration_ms <= 0:
            duration_ms = int(round(count * 1000.0 / fps))
        if max_duration_ms is not None and duration_ms > max_duration_ms:
            raise LimitError(
                f"{name} lasts {duration_ms / 1000:.1f} s: the limit is "
                f"{max_duration_ms / 1000:.0f} s, trim it first."
            )
        container.seek(0)
        rotation = _rotation_of(stream, container)
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=str(path),
            duration_ms=duration_ms,
            fps=round(fps, 4),
            width=width,
            height=height,
            frame_count=count,
            has_audio=has_audio,
            rotation=rotation,
        )
    finally:
        container.close()


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def iter_frames(
    path: str | Path,
    *,
    progress: Callable[[int], None] | None = None,
    prefetch: int | None = None,
    rgb_for: Callable[[int], bool] | None = None,
) -> Iterator[Frame]:
    """Yield upright frames in presentation order, streaming.

    Decoding runs in a thread ``prefetch`` frames ahead: PyAV releases the GIL while it
    decodes, so on two cores decoding overlaps with whatever the caller does per frame.
    Memory holds at most ``prefetch + 1`` frames. Frames whose index ``rgb_for`` accepts
    are converted to RGB in that thread too (the conversion also releases the GIL).
    """
    if prefetch is not None and prefetch <= 0:
        yield from _decode(path, progress)
        return
    # With no prefetch given, the queue is sized by the first frame's picture (below).
    q: queue.Queue[object] = queue.Queue(maxsize=prefetch or 1)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for fr in _decode(path, progress):
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


def _decode(path: str | Path, progress: Callable[[int], None] | None) -> Iterator[Frame]:
    container = _open(path)
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
                rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                yield Frame(index, t_ms, pts, frame, rot)
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


class VideoWriter:
    """H.264 (yuv420p) + AAC mp4 writer that keeps the source's timestamps.

    Audio is interleaved with video as frames arrive, so the file is well formed for
    streaming playback and nothing large is buffered.
    """

    # libx264 settings (DEFAULT_*): see there and docs/benchmarks.md.
    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float | Fraction,
        *,
        time_base: Fraction | None = None,
        audio: np.ndarray | None = None,
        sample_rate: int = 48000,
        crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET,
        x264_params: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(100000)
        self._video = self._container.add_stream("libx264", rate=rate)
        self._video.width = width - width % 2  # yuv420p needs even sides
        self._video.height = height - height % 2
        self._video.pix_fmt = "yuv420p"
        # x264 threads: one per core (its default, 1.5 per core, holds more frames in
        # flight: memory that grows with the picture, ~40 MB a frame at 4K, for no speed
        # on a machine whose other core is busy decoding and rendering).
        n = threads or usable_cores()
        if x264_params is None:
            x264_params = x264_params_for(self._video.width, self._video.height)
        self._video.options = {"crf": str(crf), "preset": preset, "threads": str(n),
                               **({"x264-params": x264_params} if x264_params else {})}
        self._time_base = time_base or Fraction(1, 1) / rate
        self._video.codec_context.time_base = self._time_base
        self._rate = rate
        self._index = 0
        self._audio_enc: _AudioEncoder | None = None
        if audio is not None and audio.size:
            a = np.asarray(audio, dtype=np.float32)
            if a.ndim == 1:
                a = a[:, None]
            channels = a.shape[1]
            layout = "mono" if channels == 1 else "stereo"
            stream = self._container.add_stream("aac", rate=sample_rate)
            stream.layout = layout
            stream.bit_rate = 192_000
            # Both codecs are opened and the header written here, in one thread, before
            # the audio encoder's thread starts using its codec.
            try:
                self._container.start_encoding()
            except BaseException:  # a codec that will not open (bad x264 settings)
                self._container.close()
                raise
            self._audio_enc = _AudioEncoder(stream, a[:, :2], sample_rate)

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        h, w = self._video.height, self._video.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
        self._encode(frame, pts)

    def write_source(self, src: Frame, pts: int | None = None) -> None:
        """Re-encode an untouched decoded frame without a round trip through RGB (the two
        colour conversions cost as much as the compositing of a face)."""
        f = src.av_frame
        # Only frames already in the encoder's format pass straight through: a full-range
        # (yuvj420p) or 10-bit frame would be read with the wrong levels.
        same = f.format.name == "yuv420p" and f.color_range in (0, 1)
        if (not same or src.rotation or f.width != self._video.width
                or f.height != self._video.height):
            self.write(src.rgb, pts)
            return
        self._encode(f, pts)

    @property
    def width(self) -> int:
        return int(self._video.width)

    @property
    def height(self) -> int:
        return int(self._video.height)

    def write_frame(self, frame: av.VideoFrame, pts: int | None = None) -> None:
        """Encode a yuv420p frame of the output's size as it is."""
        self._encode(frame, pts)

    def _encode(self, frame: av.VideoFrame, pts: int | None) -> None:
        # A decoded frame carries its source's picture type, which libx264 obeys as a
        # forced type: the source's GOP would override our own settings (B-frames, key
        # frames). The encoder decides.
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            frame.pict_type = av.video.frame.PictureType.NONE
        frame.pts = pts if pts is not None else self._index
        frame.time_base = self._time_base
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self._index += 1
        t = float(frame.pts * self._time_base) if pts is not None else self._index / self._rate
        self._push_audio(until_s=float(t) + 0.5)

    def _push_audio(self, until_s: float | None) -> None:
        if self._audio_enc is not None:
            for packet in self._audio_enc.take(until_s):
                self._container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self._video.encode():
                self._container.mux(packet)
            self._push_audio(until_s=None)
        finally:
            self.abort()

    def abort(self) -> None:
        """Close without finishing the file (a failed render: it is thrown away): the
        audio thread stops where it is instead of encoding the rest of the track."""
        if self._audio_enc is not None:
            self._audio_enc.stop()
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _AudioEncoder:
    """Encodes a whole (N, C) track to AAC in its own thread; the writer's thread muxes
    the packets as the video reaches them.

    AAC costs about 2.3 s of CPU a minute of stereo here. Encoded in the writer's thread
    between video frames it held up x264's input for as long; in its own thread it fills
    the moments the other threads wait. It stays at most ``ahead_s`` seconds (and one
    block) ahead of the point the writer last asked for (the video's time plus half a
    second), so the packets it holds stay small (192 kb/s: about 250 kB).
    """

    BLOCK = 8192  # samples an AudioFrame (eight AAC frames: fewer Python calls)

    def __init__(self, stream: av.audio.stream.AudioStream, audio: np.ndarray,
                 sample_rate: int, ahead_s: float = 10.0) -> None:
        self._stream = stream
        # (N, C), kept as given: each block is made planar as it is encoded, so a long
        # track is not held twice (a minute of stereo is 23 MB).
        self._audio = audio
        self._sr = sample_rate
        self._ahead = ahead_s
        self._cond = threading.Condition()
        self._packets: collections.deque[av.Packet] = collections.deque()
        self._made = 0  # samples encoded so far
        self._wanted_s = 0.0  # how far the writer has asked for
        self._done = False
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lipdub-audio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        total = self._audio.shape[0]
        try:
            pos = 0
            while pos < total:
                with self._cond:
                    while not self._stopped and pos > (self._wanted_s + self._ahead) * self._sr:
                        self._cond.wait()
                    if self._stopped:
                        return
                end = min(pos + self.BLOCK, total)
                block = np.ascontiguousarray(self._audio[pos:end].T)
                af = av.AudioFrame.from_ndarray(
                    block, format="fltp", layout="mono" if block.shape[0] == 1 else "stereo")
                af.sample_rate = self._sr
                af.pts = pos
                af.time_base = Fraction(1, self._sr)
                packets = list(self._stream.encode(af))
                with self._cond:
                    self._packets.extend(packets)
                    self._made = pos = end
                    self._cond.notify_all()
            packets = list(self._stream.encode())  # the encoder's tail
            with self._cond:
                self._packets.extend(packets)
        except BaseException as e:  # raised in the writer's thread, at its next take
            with self._cond:
                self._error = e
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def take(self, until_s: float | None) -> list[av.Packet]:
        """The packets up to ``until_s`` seconds (all, at the end, when None), waiting for
        the encoder to get there."""
        total = self._audio.shape[0]
        with self._cond:
            self._wanted_s = float("inf") if until_s is None else max(self._wanted_s, until_s)
            self._cond.notify_all()
            need = total if until_s is None else min(total, int(until_s * self._sr))
            while not self._done and (until_s is None or self._made < need):
                self._cond.wait()
            if self._error is not None:
                raise self._error
            out = []
            while self._packets and (until_s is None or _seconds(self._packets[0]) <= until_s):
                out.append(self._packets.popleft())
            return out

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()


def _seconds(packet: av.Packet) -> float:
    if packet.pts is None or packet.time_base is None:
        return 0.0
    return float(packet.pts * packet.time_base)


def queue_depth(width: int, height: int, budget_mb: float = 26.0, most: int = 6) -> int:
    """Frames a queue between threads may hold: ``most``, fewer for large pictures so
    that a queue of yuv420p frames stays within ``budget_mb`` (at least 2 to overlap)."""
    frame_mb = width * height * 1.5 / 2**20
    return int(max(2, min(most, budget_mb // max(frame_mb, 1e-6))))


class BackgroundWriter:
    """A :class:`VideoWriter` fed through a bounded queue and drained by its own thread,
    so the RGB->YUV conversion and the encoder (PyAV releases the GIL around both) run
    while the caller composes the next frames. The queue bounds memory; an error in the
    writer thread is raised at the caller's next write or at close."""

    def __init__(self, writer: VideoWriter, depth: int | None = None) -> None:
        self._writer = writer
        if depth is None:  # a few frames in flight, whatever their size (a 4K frame: 12 MB)
            depth = queue_depth(writer.width, writer.height)
        self._queue: queue.Queue[tuple[str, object, int | None] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="lipdub-encode", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # keep draining so the producer never blocks on a dead writer
            kind, data, pts = item
            try:
                if kind == "rgb":
                    self._writer.write(data, pts)  # type: ignore[arg-type]
                elif kind == "yuv":  # a YuvPicture: its planes are joined here, off the caller
                    self._writer.write_frame(data.frame(), pts)  # type: ignore[attr-defined]
                else:
                    self._writer.write_source(data, pts)  # type: ignore[arg-type]
            except BaseException as e:  # re-raised in the caller's thread
                self._error = e

    def _put(self, item: tuple[str, object, int | None]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        self._put(("rgb", rgb, pts))

    def write_source(self, src: Frame, pts: int | None = None) -> None:
        self._put(("src", src, pts))

    def write_picture(self, picture: object, pts: int | None = None) -> None:
        """Queue a :class:`lipdub.media.yuv.YuvPicture` (edited planes of a source frame)."""
        self._put(("yuv", picture, pts))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            self._writer.abort()  # the file is lost either way: do not finish its audio
            raise self._error
        self._writer.close()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        self._queue.put(None)  # the caller failed: stop the thread, keep its error
        self._thread.join()
        self._writer.abort()


def source_timing(path: str | Path) -> tuple[Fraction, Fraction]:
    """The video stream's (average frame rate, time base), to re-encode with the same clock."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return Fraction(rate), Fraction(stream.time_base or Fraction(1, 90000))
    finally:
        container.close()


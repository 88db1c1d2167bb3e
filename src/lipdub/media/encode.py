"""Encoding: H.264 (yuv420p) + AAC mp4 that keeps the source's clock, geometry and colour.

The writer keeps the source's timestamps (variable frame rates stay as they were), its
pixel shape (an anamorphic source plays at its display aspect, not squeezed) and its
colour tags (primaries, transfer, matrix and range: a player that guessed would shift the
colours). The pictures it is given are the decoder's plain frames (media/decode.py), so
an untouched frame is encoded from the source's own levels. The audio is encoded in its
own thread and interleaved with the video as the frames arrive.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lipdub.media.decode import Frame, plain_frame, queue_depth
from lipdub.media.pools import usable_cores
from lipdub.media.probe import PictureTags, picture_tags

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
        tags: PictureTags | None = None,
        source: str | Path | None = None,
    ) -> None:
        """``width`` x ``height``: the upright picture (an odd side is padded to even, as
        the decoder pads it). ``tags`` (or those of the video file ``source``): the pixel
        shape and colour tags to keep; square pixels and untagged colour without."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(100000)
        self._video = self._container.add_stream("libx264", rate=rate)
        self._video.width = width + width % 2  # yuv420p needs even sides
        self._video.height = height + height % 2
        self._video.pix_fmt = "yuv420p"
        if tags is None:
            tags = picture_tags(source) if source is not None else PictureTags()
        self._tags = tags
        cc = self._video.codec_context
        if tags.sample_aspect != 1:  # x264 writes it in the stream, the muxer as 'pasp'
            cc.sample_aspect_ratio = tags.sample_aspect
        cc.color_range = tags.color_range
        cc.color_primaries = tags.color_primaries
        cc.color_trc = tags.color_trc
        cc.colorspace = tags.colorspace
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
        rgb = rgb[:h, :w]
        if rgb.shape[:2] != (h, w):  # an odd side: padded as the decoder pads
            rgb = np.pad(rgb, ((0, h - rgb.shape[0]), (0, w - rgb.shape[1]), (0, 0)),
                         mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self._tags.full_range:  # libswscale's default is video levels
            frame = frame.reformat(format="yuv420p", dst_color_range=2)
        self._encode(frame, pts)

    def write_source(self, src: Frame, pts: int | None = None) -> None:
        """Re-encode an untouched decoded frame without a round trip through RGB (the two
        colour conversions cost as much as the compositing of a face, and lose levels)."""
        f = src.av_frame
        if f.format.name != "yuv420p" or src.rotation or f.width % 2 or f.height % 2:
            f = plain_frame(f, src.rotation)  # a raw frame (the decoder's are plain)
        if f.width != self._video.width or f.height != self._video.height:
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


__all__ = ["DEFAULT_CRF", "DEFAULT_PRESET", "DEFAULT_X264_PARAMS", "LARGE_PICTURE",
           "LARGE_PICTURE_X264_PARAMS", "BackgroundWriter", "VideoWriter", "x264_params_for"]

"""A video's facts as a player presents them: duration, frames, size, geometry, colour.

Everything is read from the presentation, not from the storage. A file trimmed with
stream copy keeps the frames before the cut (an edit list marks them discarded, and
the decoder drops them): counting packets, or taking the first stored timestamp as the
start, reports the untrimmed length. So discarded packets are not counted, and the
clip's timeline starts at the first presented frame. The picture's geometry (sample
aspect ratio) and colour tags are read here too, so the writer can keep them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from lipdub.errors import LimitError, MediaError

# The largest picture we agree to decode: 4K plus margin. Guards memory against
# crafted headers that claim enormous sizes.
MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video, as presented (rotation already applied to width/height).

    ``start_ms``: the first presented frame's time on the file's own clock (the clip's
    timeline starts there; the audio is aligned to it). ``sample_aspect``: the shape of a
    stored pixel (width / height; 1 for square pixels), upright."""

    path: str
    duration_ms: int
    fps: float
    width: int
    height: int
    frame_count: int
    has_audio: bool
    rotation: int = 0
    start_ms: float = 0.0
    sample_aspect: Fraction = Fraction(1)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) a player shows: the stored width stretched by the pixel shape."""
        return int(round(self.width * self.sample_aspect)), self.height

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
            "start_ms": self.start_ms,
            "sample_aspect": [self.sample_aspect.numerator, self.sample_aspect.denominator],
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> VideoInfo:
        sar = d.get("sample_aspect") or [1, 1]
        return cls(
            path=str(d["path"]),
            duration_ms=int(d["duration_ms"]),  # type: ignore[call-overload]
            fps=float(d["fps"]),  # type: ignore[arg-type]
            width=int(d["width"]),  # type: ignore[call-overload]
            height=int(d["height"]),  # type: ignore[call-overload]
            frame_count=int(d["frame_count"]),  # type: ignore[call-overload]
            has_audio=bool(d["has_audio"]),
            rotation=int(d.get("rotation", 0)),  # type: ignore[call-overload]
            start_ms=float(d.get("start_ms", 0.0)),  # type: ignore[arg-type]
            sample_aspect=Fraction(int(sar[0]), int(sar[1])),  # type: ignore[index]
        )


@dataclass(frozen=True)
class PictureTags:
    """What the writer copies to its output so a player shows the picture as the source:
    the upright pixel shape and the colour description (FFmpeg's enum values; 2 is
    "unspecified" for primaries, transfer and matrix, 0 for range)."""

    sample_aspect: Fraction = Fraction(1)
    color_primaries: int = 2
    color_trc: int = 2
    colorspace: int = 2
    color_range: int = 0

    @property
    def full_range(self) -> bool:
        return self.color_range == 2


def open_video(path: str | Path) -> av.container.InputContainer:
    """Open a media file for reading; a clear MediaError for what cannot be opened."""
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"Video file not found: {p}.")
    if p.stat().st_size == 0:
        raise MediaError(f"{p.name} is empty (0 bytes): give a video file with content.")
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


def _first_frame(stream: av.video.stream.VideoStream,
                 container: av.container.InputContainer) -> av.VideoFrame | None:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError:
        return None
    return None


def frame_rotation(frame: av.VideoFrame | None) -> int:
    """Counter-clockwise display rotation in degrees (0, 90, 180, 270) of a decoded frame."""
    return int(round(getattr(frame, "rotation", 0) or 0)) % 360 if frame is not None else 0


def _sample_aspect(stream: av.video.stream.VideoStream, rotation: int) -> Fraction:
    sar = stream.codec_context.sample_aspect_ratio or stream.sample_aspect_ratio
    if not sar or sar <= 0:
        return Fraction(1)
    sar = Fraction(sar)
    # Turned upright, a pixel's width becomes its height.
    return 1 / sar if rotation in (90, 270) else sar


def probe(path: str | Path, *, max_duration_ms: int | None = None) -> VideoInfo:
    """Read a video's facts without decoding pictures (packets are counted, not decoded;
    only the first frame is, for its rotation)."""
    container = open_video(path)
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
                # A discarded packet (before an edit list's start) is decoded only as a
                # reference for the frames after it; a player never shows it.
                if packet.size == 0 or packet.pts is None or packet.is_discard:
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
        rotation = frame_rotation(_first_frame(stream, container))
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
            start_ms=float(first * tb) * 1000.0,
            sample_aspect=_sample_aspect(stream, rotation),
        )
    finally:
        container.close()


def picture_tags(path: str | Path) -> PictureTags:
    """The video stream's upright pixel shape and colour tags (first frame's, where the
    stream's header leaves them unspecified)."""
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        cc = stream.codec_context
        frame = _first_frame(stream, container)
        rotation = frame_rotation(frame)

        def tag(name: str, unspecified: int) -> int:
            v = int(getattr(cc, name, unspecified) or unspecified)
            if v == unspecified and frame is not None:
                v = int(getattr(frame, name, unspecified) or unspecified)
            return v

        rng = tag("color_range", 0)
        fmt = frame.format.name if frame is not None else (cc.pix_fmt or "")
        if rng == 0 and fmt.startswith("yuvj"):  # the JPEG formats are full range by name
            rng = 2
        return PictureTags(sample_aspect=_sample_aspect(stream, rotation),
                           color_primaries=tag("color_primaries", 2),
                           color_trc=tag("color_trc", 2), colorspace=tag("colorspace", 2),
                           color_range=rng)
    finally:
        container.close()


def source_timing(path: str | Path) -> tuple[Fraction, Fraction]:
    """The video stream's (average frame rate, time base), to re-encode with the same clock."""
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return Fraction(rate), Fraction(stream.time_base or Fraction(1, 90000))
    finally:
        container.close()


__all__ = ["MAX_PIXELS", "PictureTags", "VideoInfo", "frame_rotation", "open_video",
           "picture_tags", "probe", "source_timing"]

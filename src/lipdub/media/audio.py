"""Audio in and out of the pipeline: decode anything to float32, crop, place, mix, limit.

Everything here works on float32 arrays shaped ``(n, channels)`` in [-1, 1]. Decoding goes
through PyAV (its bundled FFmpeg), so any container/codec FFmpeg knows is accepted, and
its ``AudioResampler`` converts rate and channel layout while decoding, frame by frame:
only the resampled output is kept in memory, never the whole compressed or native-rate
stream.

The video writer muxes the mixed track; this module never encodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from scipy.ndimage import minimum_filter1d
from scipy.signal import resample_poly

from lipdub.errors import InputError, LimitError, MediaError

_LAYOUTS = {1: "mono", 2: "stereo"}
DEFAULT_CEILING_DB = -1.0
LOOKAHEAD_MS = 5.0  # the limiter's: its gain starts falling this long before a peak
RELEASE_DB_PER_S = 60.0  # ... and recovers at this rate after it


@dataclass(frozen=True)
class PlacedClip:
    """A piece of audio put on the video's timeline at ``insert_ms``, scaled by ``volume``."""

    samples: np.ndarray  # (n,) or (n, channels) float32
    sr: int
    insert_ms: float
    volume: float = 1.0

    @property
    def duration_ms(self) -> float:
        return 1000.0 * _as_2d(self.samples).shape[0] / self.sr


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x[:, None] if x.ndim == 1 else x


def _fmt_ms(ms: float) -> str:
    return f"{ms:.0f} ms"


def _channels(channels: int) -> str:
    if channels not in _LAYOUTS:
        raise InputError(f"Unsupported channel count {channels}: ask for 1 (mono) or 2 (stereo).")
    return _LAYOUTS[channels]


def _check_file(path: Path, max_bytes: int | None) -> None:
    if not path.is_file():
        raise MediaError(f"{path.name} does not exist or is not a file.")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(f"{path.name} is empty (0 bytes): give a file that contains audio.")
    if max_bytes is not None and size > max_bytes:
        raise LimitError(
            f"{path.name} is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit: "
            "use a shorter or more compressed file."
        )


def _decode(
    path: Path,
    sr: int,
    channels: int,
    max_duration_ms: float | None,
    max_bytes: int | None,
    require_audio: bool,
    align_to_video: bool = False,
) -> np.ndarray | None:
    _channels(channels)
    if sr <= 0:
        raise InputError(f"Sample rate must be positive, got {sr}.")
    _check_file(path, max_bytes)
    max_samples = None if max_duration_ms is None else math.ceil(max_duration_ms * sr / 1000)

    def over_limit() -> LimitError:
        return LimitError(
            f"{path.name} is longer than the {max_duration_ms / 1000:.1f} s limit: "  # type: ignore[operator]
            "trim it first."
        )

    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise MediaError(
            f"{path.name} is not a readable audio or video file: give wav, mp3, m4a/aac, "
            "ogg/opus or flac."
        ) from e
    with container:
        if not container.streams.audio:
            if not require_audio:
                return None
            raise MediaError(f"{path.name} has no audio stream: give a file with sound in it.")
        stream = container.streams.audio[0]
        video_start_s: float | None = None
        if align_to_video and container.streams.video:
            vs = container.streams.video[0]
            if vs.start_time is not None and vs.time_base is not None:
                video_start_s = float(vs.start_time * vs.time_base)
        # Refuse before decoding when the container states an over-long duration; the
        # running count below still catches files that lie or state nothing.
        if max_duration_ms is not None:
            stated = None
            if stream.duration is not None and stream.time_base is not None:
                stated = float(stream.duration * stream.time_base) * 1000
            elif container.duration is not None:
                stated = container.duration / 1000  # microseconds -> ms
            if stated is not None and stated > max_duration_ms + 50:
                raise over_limit()
        # FFmpeg downmixes stereo to mono as (L + R) * 0.707, which lifts in-phase speech
        # by 3 dB and can push it past full scale; so the resampler only goes to mono or
        # stereo following the source, and channel counts are matched here by averaging.
        src_mono = (stream.codec_context.channels or 2) == 1
        n_ch = 1 if src_mono else 2
        # Packed samples, straight into one buffer sized from the stated duration (grown
        # by half when a file lies): a list of chunks joined at the end held the track
        # twice, and transposing planar audio a third time.
        resampler = av.AudioResampler(format="flt", layout="mono" if src_mono else "stereo",
                                      rate=sr)
        stated_ms = (float(stream.duration * stream.time_base) * 1000
                     if stream.duration is not None and stream.time_base is not None
                     else (container.duration or 0) / 1000)
        # A stated length is only a hint (capped: a header may claim hours).
        est_ms = min(stated_ms, max_duration_ms if max_duration_ms is not None else 600_000.0)
        buf = np.empty((max(sr, int(est_ms * sr / 1000) + sr // 2), n_ch), np.float32)
        total = 0
        first_s: float | None = None  # the first decoded sample's presentation time

        def take(out: av.AudioFrame) -> None:
            nonlocal buf, total
            a = out.to_ndarray().reshape(-1, n_ch)
            if total + a.shape[0] > buf.shape[0]:
                grown = np.empty((max(total + a.shape[0], buf.shape[0] * 3 // 2), n_ch),
                                 np.float32)
                grown[:total] = buf[:total]
                buf = grown
            buf[total : total + a.shape[0]] = a
            total += a.shape[0]

        try:
            for frame in container.decode(stream):
                if first_s is None and frame.pts is not None and frame.time_base:
                    first_s = float(frame.pts * frame.time_base)
                frame.pts = None  # let the resampler count samples; bad pts must not gap
                for out in resampler.resample(frame):
                    take(out)
                if max_samples is not None and total > max_samples + sr // 20:
                    raise over_limit()
            for out in resampler.resample(None):
                take(out)
        except av.FFmpegError as e:
            raise MediaError(
                f"{path.name} could not be decoded: the file is corrupt or truncated; "
                "export it again."
            ) from e
    if total == 0:
        raise MediaError(f"{path.name} has an audio stream but no decodable audio in it.")
    if align_to_video and first_s is not None and video_start_s is not None:
        # The clip's timeline starts at its first presented frame (media/probe.py): sound
        # before it is cut, a late start is preceded by silence, as a player plays them.
        shift = int(round((first_s - video_start_s) * sr))
        if shift < 0:
            cut = min(-shift, total)
            buf = buf[cut:total]
            total -= cut
        elif shift > 0:
            buf = np.concatenate([np.zeros((shift, n_ch), np.float32), buf[:total]])
            total += shift
    if max_samples is not None and total > max_samples + sr // 20:
        raise over_limit()
    # A view when the estimate held (less than a second spare is not worth a copy).
    out_arr = buf[:total] if buf.shape[0] - total < sr else buf[:total].copy()
    return _match_channels(out_arr, channels)


def decode_audio(
    path: str | Path,
    sr: int = 48000,
    channels: int = 2,
    *,
    max_duration_ms: float | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Decode ``path`` to float32 ``(n, channels)`` at ``sr``; MediaError/LimitError if
    unusable. A DC offset (a constant carried by a cheap interface or a bad export) is
    removed: mixed into the output it would shift the whole track and eat headroom."""
    out = _decode(Path(path), sr, channels, max_duration_ms, max_bytes, require_audio=True)
    assert out is not None
    out -= out.mean(axis=0, dtype=np.float64).astype(np.float32)
    return out


def read_video_audio(
    video_path: str | Path,
    sr: int = 48000,
    channels: int = 2,
    *,
    max_duration_ms: float | None = None,
    max_bytes: int | None = None,
) -> np.ndarray | None:
    """The audio track of a video as float32 ``(n, channels)``, or None when it has none;
    sample 0 is the sound at the video's first presented frame (a start offset between
    the tracks, as trimmed and some camera files have, is honoured)."""
    return _decode(Path(video_path), sr, channels, max_duration_ms, max_bytes,
                   require_audio=False, align_to_video=True)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels: float32 ``(n,)``."""
    x = np.asarray(samples, dtype=np.float32)
    return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited rate change of an in-memory array (decode already resamples files)."""
    x = np.asarray(samples, dtype=np.float32)
    if sr_in == sr_out or x.shape[0] == 0:
        return x
    g = math.gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g, axis=0).astype(np.float32)


def crop(
    samples: np.ndarray,
    sr: int,
    start_ms: float = 0.0,
    end_ms: float | None = None,
    *,
    min_duration_ms: float = 0.0,
) -> np.ndarray:
    """Samples in ``[start_ms, end_ms)``; InputError when the window or the result is unusable."""
    x = np.asarray(samples, dtype=np.float32)
    n = x.shape[0]
    total_ms = 1000.0 * n / sr
    if n == 0:
        raise InputError("The audio clip is empty: give audio that contains sound.")
    end = total_ms if end_ms is None else float(end_ms)
    start = float(start_ms)
    if start < 0 or start >= total_ms or end <= start or end > total_ms + 1000.0 / sr:
        raise InputError(
            f"Crop window {_fmt_ms(start)}-{_fmt_ms(end)} is outside the audio, which is "
            f"{_fmt_ms(total_ms)} long: choose start < end within that length."
        )
    i0 = int(round(start * sr / 1000))
    i1 = min(n, int(round(end * sr / 1000)))
    out = x[i0:i1]
    dur = 1000.0 * out.shape[0] / sr
    if dur < min_duration_ms:
        raise InputError(
            f"The audio clip is {_fmt_ms(dur)} long, shorter than the {_fmt_ms(min_duration_ms)} "
            "minimum: use a longer clip or crop window."
        )
    return out


def _forward_min(x: np.ndarray, size: int) -> np.ndarray:
    """``out[i] = min(x[i : i + size])`` (the window looks ahead, edge padded with 1)."""
    if size <= 1:
        return x.copy()
    padded = np.concatenate([x, np.ones(size - 1, x.dtype)])
    # minimum_filter1d centres its window at size // 2 + origin; shift it to start at i.
    origin = -(size // 2)
    return minimum_filter1d(padded, size, mode="nearest", origin=origin)[: x.shape[0]]


def limit_peaks(
    samples: np.ndarray,
    sr: int,
    *,
    ceiling_db: float = DEFAULT_CEILING_DB,
    lookahead_ms: float = LOOKAHEAD_MS,
    release_db_per_s: float = RELEASE_DB_PER_S,
) -> np.ndarray:
    """Look-ahead peak limiter: every sample ends up at or under ``ceiling_db`` dBFS.

    The gain needed at each sample is known in advance (offline), so the gain starts to fall
    ``lookahead_ms`` before a peak and reaches the needed value exactly there: no clipped
    waveform, no overshoot. It then recovers at a constant dB rate, slow enough that the
    gain change is not itself heard as distortion. Samples already under the ceiling and
    far from any peak keep gain exactly 1, so quiet signals come out bit-identical.
    """
    y = _as_2d(samples).astype(np.float32)  # a copy: the caller's array is left alone
    _limit_in_place(y, sr, ceiling_db, lookahead_ms, release_db_per_s)
    return y if np.asarray(samples).ndim == 2 else y[:, 0]


_BLOCK = 1 << 18  # samples per block (5 s at 48 kHz): no temporary is the track's size


def _abs_peak(y: np.ndarray) -> np.ndarray:
    """Per sample, the largest magnitude over the channels (float32)."""
    peak = np.abs(y[:, 0])
    for c in range(1, y.shape[1]):
        np.maximum(peak, np.abs(y[:, c]), out=peak)
    return peak


def _limit_in_place(y: np.ndarray, sr: int, ceiling_db: float, lookahead_ms: float,
                    release_db_per_s: float) -> None:
    """:func:`limit_peaks` on float32 ``(n, ch)`` ``y`` itself, block by block: the
    look-ahead, the running minimum of the release and the box average carry their state
    across blocks, so a minute of audio costs a few MB here, not a copy per step."""
    n = y.shape[0]
    ceiling = float(10 ** (ceiling_db / 20))
    if n == 0 or all(float(_abs_peak(y[a : a + _BLOCK]).max()) <= ceiling
                     for a in range(0, n, _BLOCK)):
        return
    look = max(1, int(round(lookahead_ms * sr / 1000)))
    step = release_db_per_s / sr
    held = np.inf  # running min of (ahead_db - ramp) over the blocks so far
    tail = np.ones(look - 1)  # the last look - 1 hold gains (1 before the start)
    for a in range(0, n, _BLOCK):
        b = min(n, a + _BLOCK)
        # The gain each sample needs, looking ``look`` samples ahead (into the next block).
        peak = _abs_peak(y[a : min(n, b + look - 1)]).astype(np.float64)
        need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
        ahead = 20.0 * np.log10(np.maximum(_forward_min(need, look)[: b - a], 1e-12))
        # Release in dB at a constant rate: hold[i] = min_k(ahead_db[k] + (i - k) * step),
        # one running minimum instead of a per-sample Python loop.
        ramp = np.arange(a, b, dtype=np.float64) * step
        ahead -= ramp
        np.minimum.accumulate(ahead, out=ahead)
        np.minimum(ahead, held, out=ahead)
        held = float(ahead[-1])
        ahead += ramp
        hold = np.power(10.0, np.minimum(ahead, 0.0) / 20.0)
        # A box average over the look-ahead turns the steps into ramps; every value
        # averaged at a peak is already <= the gain that peak needs, so the ceiling holds.
        ext = np.concatenate([tail, hold])
        c = np.concatenate([[0.0], np.cumsum(ext)])
        gain = ((c[look:] - c[:-look]) / look).astype(np.float32)
        tail = ext[len(ext) - (look - 1):]
        y[a:b] *= gain[:, None]
    np.clip(y, -ceiling, ceiling, out=y)  # only float rounding can reach this


def _add_scaled(dst: np.ndarray, src: np.ndarray, gain: float) -> None:
    """``dst += src * gain`` in blocks (no temporary the size of the track)."""
    for a in range(0, src.shape[0], _BLOCK):
        b = min(src.shape[0], a + _BLOCK)
        if gain == 1.0:
            dst[a:b] += src[a:b]
        else:
            dst[a:b] += src[a:b] * np.float32(gain)


def mix(
    duration_ms: float,
    sr: int,
    clips: Sequence[PlacedClip],
    original: np.ndarray | None = None,
    *,
    original_volume: float = 1.0,
    channels: int = 2,
    ceiling_db: float = DEFAULT_CEILING_DB,
    reuse_original: bool = False,
) -> np.ndarray:
    """The video's new soundtrack: original × volume + every clip × its volume, limited.

    Returns float32 ``(n, channels)`` covering exactly ``duration_ms`` at ``sr``. A clip that
    runs past the end of the video is cut there; a missing (None) or silent original works.
    ``reuse_original``: the caller gives ``original`` up, and the mix is made in it when
    its shape allows (a minute of stereo is 23 MB not held twice).
    """
    _channels(channels)
    if duration_ms <= 0:
        raise InputError(f"The video duration must be positive, got {_fmt_ms(duration_ms)}.")
    _check_volume("original_volume", original_volume)
    n = int(round(duration_ms * sr / 1000))
    if (reuse_original and original is not None and original.dtype == np.float32
            and original.ndim == 2 and original.shape[1] == channels
            and original.shape[0] >= n and original.flags.writeable):
        out = original[:n]
        if original_volume != 1.0:
            out *= np.float32(original_volume)
    else:
        out = np.zeros((n, channels), np.float32)  # float32: a minute of stereo is 23 MB
        if original is not None and original_volume > 0:
            o = _match_channels(_as_2d(original), channels)[:n]
            _add_scaled(out, o, original_volume)
    for k, clip in enumerate(clips):
        _check_volume(f"clip {k + 1} volume", clip.volume)
        if not 0 <= clip.insert_ms < duration_ms:
            raise InputError(
                f"Insert point {_fmt_ms(clip.insert_ms)} is outside the video, which is "
                f"{_fmt_ms(duration_ms)} long: choose a time from 0 up to its end."
            )
        s = _as_2d(clip.samples)
        if s.shape[0] == 0:
            raise InputError(f"Audio clip {k + 1} is empty: give audio that contains sound.")
        s = _match_channels(resample(s, clip.sr, sr), channels)
        i0 = int(round(clip.insert_ms * sr / 1000))
        i1 = min(n, i0 + s.shape[0])
        _add_scaled(out[i0:i1], s[: i1 - i0], clip.volume)
    _limit_in_place(out, sr, ceiling_db, LOOKAHEAD_MS, RELEASE_DB_PER_S)
    return out


def _check_volume(name: str, v: float) -> None:
    if not (0.0 <= v <= 2.0) or math.isnan(v):
        raise InputError(f"{name} is {v}, outside 0..2: use 0 (mute) up to 2 (double).")


def _match_channels(x: np.ndarray, channels: int) -> np.ndarray:
    if x.shape[1] == channels:
        return x
    mono = x.mean(axis=1, keepdims=True, dtype=np.float32)
    return np.repeat(mono, channels, axis=1)

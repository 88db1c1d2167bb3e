"""Decode, crop, place, mix and limit: the audio half of the dubbing pipeline."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from lipdub.errors import InputError, LimitError, MediaError
from lipdub.media.audio import (
    PlacedClip,
    crop,
    decode_audio,
    limit_peaks,
    mix,
    read_video_audio,
    to_mono,
)

MEDIA = Path(__file__).resolve().parents[3] / "shared" / "media"
CEIL = 10 ** (-1 / 20)


def tone(sr: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(path: Path, codec: str, sr: int, mono: np.ndarray, layout: str = "stereo") -> Path:
    """Write ``mono`` (duplicated to ``layout``) with PyAV's encoder into ``path``."""
    ch = 2 if layout == "stereo" else 1
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=sr)
        s.layout = layout  # type: ignore[union-attr]
        fmt = s.codec_context.codec.audio_formats[0].name  # type: ignore[union-attr]
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=sr)
        block = 1024
        pts = 0
        for i in range(0, mono.shape[0], block):
            chunk = np.repeat(mono[None, i : i + block], ch, axis=0)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = pts
            pts += chunk.shape[1]
            for f in resampler.resample(frame):
                for p in s.encode(f):  # type: ignore[union-attr]
                    c.mux(p)
        for p in s.encode(None):  # type: ignore[union-attr]
            c.mux(p)
    return path


@pytest.mark.parametrize(
    ("name", "codec", "sr", "layout"),
    [
        ("a.mp3", "libmp3lame", 44100, "stereo"),
        ("a.m4a", "aac", 22050, "mono"),
        ("a.ogg", "libopus", 48000, "stereo"),
        ("a.flac", "flac", 16000, "mono"),
        ("a.wav", "pcm_s16le", 8000, "stereo"),
    ],
)
def test_decode_formats_resample_and_layout(
    tmp_path: Path, name: str, codec: str, sr: int, layout: str
) -> None:
    src = tone(sr, 1.0, 440.0, 0.5)
    path = encode(tmp_path / name, codec, sr, src, layout)
    for out_sr, ch in [(48000, 2), (16000, 1)]:
        x = decode_audio(path, out_sr, ch)
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == ch
        # Lossy codecs add priming/padding; allow a few frames either way.
        assert abs(x.shape[0] / out_sr - 1.0) < 0.08
        mid = to_mono(x)[int(0.2 * out_sr) : int(0.8 * out_sr)]
        rms = float(np.sqrt(np.mean(mid**2)))
        assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.08)
        spec = np.abs(np.fft.rfft(mid * np.hanning(mid.size)))
        peak_hz = np.argmax(spec) * out_sr / mid.size
        assert abs(peak_hz - 440) < 5


def test_read_video_audio_real_and_absent(tmp_path: Path) -> None:
    video = MEDIA / "videoretalking__face_2.mp4"
    if video.is_file():
        a = read_video_audio(video, 48000)
        assert a is not None and a.shape[1] == 2 and abs(a.shape[0] / 48000 - 5.04) < 0.1
    silent = tmp_path / "noaudio.mp4"
    with av.open(str(silent), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width = s.height = 32  # type: ignore[union-attr]
        s.pix_fmt = "yuv420p"  # type: ignore[union-attr]
        for i in range(5):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            for p in s.encode(f):  # type: ignore[union-attr]
                c.mux(p)
        for p in s.encode(None):  # type: ignore[union-attr]
            c.mux(p)
    assert read_video_audio(silent, 16000) is None
    with pytest.raises(MediaError, match=r"^noaudio\.mp4 has no audio stream"):
        decode_audio(silent)


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(".")
    return msg


def test_bad_inputs_give_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty") as e:
        decode_audio(empty)
    one_line(e)

    junk = tmp_path / "notes.mp3"
    junk.write_bytes(b"this is plain text, not audio at all\n" * 50)
    with pytest.raises(MediaError, match="not a readable audio") as e:
        decode_audio(junk)
    one_line(e)

    with pytest.raises(MediaError, match="does not exist") as e:
        decode_audio(tmp_path / "missing.wav")
    one_line(e)

    path = encode(tmp_path / "long.flac", "flac", 16000, tone(16000, 2.0))
    with pytest.raises(LimitError, match="limit") as e:
        decode_audio(path, max_duration_ms=1000)
    one_line(e)
    with pytest.raises(LimitError, match="MB") as e:
        decode_audio(path, max_bytes=100)
    one_line(e)
    assert decode_audio(path, 16000, 1, max_duration_ms=2500).shape[0] == 32000


def test_truncated_file_is_a_media_error_or_shorter(tmp_path: Path) -> None:
    path = encode(tmp_path / "t.m4a", "aac", 44100, tone(44100, 2.0))
    data = path.read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[: len(data) // 3])
    # A cut MP4 loses its index (moov at the end): either it fails clearly or decodes less.
    try:
        x = decode_audio(cut)
    except MediaError as e:
        assert "\n" not in str(e)
    else:
        assert x.shape[0] < 2 * 48000


def test_crop_validation() -> None:
    sr = 1000
    x = np.arange(3000, dtype=np.float32)
    assert np.array_equal(crop(x, sr, 500, 1500), x[500:1500])
    assert crop(x, sr, 2000).shape[0] == 1000
    for bad in [(-1, 100), (100, 100), (2000, 1000), (2500, 4000), (3000, 3500)]:
        with pytest.raises(InputError, match="outside the audio") as e:
            crop(x, sr, *bad)
        one_line(e)
    with pytest.raises(InputError, match="empty") as e:
        crop(np.zeros(0, np.float32), sr)
    one_line(e)
    with pytest.raises(InputError, match="shorter than") as e:
        crop(x, sr, 0, 200, min_duration_ms=500)
    one_line(e)


def test_mix_volumes_and_offsets() -> None:
    sr = 8000
    n = 2 * sr
    rng = np.random.default_rng(0)
    orig = (0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    a = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    b = (0.1 * rng.standard_normal((3000, 2))).astype(np.float32)
    clips = [PlacedClip(a, sr, 250.0, 1.5), PlacedClip(b, sr, 1800.0, 0.5)]
    out = mix(2000, sr, clips, orig, original_volume=0.3)
    exp = orig.astype(np.float64) * 0.3
    exp[2000:6000] += a[:, None] * 1.5
    exp[14400:] += b[: n - 14400] * 0.5  # runs past the end: cut there
    assert out.shape == (n, 2) and out.dtype == np.float32
    assert np.abs(exp).max() < CEIL  # so the limiter must leave it alone
    np.testing.assert_allclose(out, exp, atol=1e-6)


def test_mix_without_original_and_resampled_clip() -> None:
    clip = PlacedClip(tone(16000, 0.5, 200.0, 0.4), 16000, 100.0, 1.0)
    out = mix(1000, 48000, [clip], None)
    assert out.shape == (48000, 2)
    assert np.abs(out[: int(0.095 * 48000)]).max() < 1e-3
    assert np.abs(out[int(0.2 * 48000) : int(0.5 * 48000)]).max() == pytest.approx(0.4, rel=0.02)
    assert np.abs(out[int(0.61 * 48000) :]).max() < 1e-3
    silent = mix(1000, 48000, [clip], np.zeros((48000, 2), np.float32))
    np.testing.assert_allclose(silent, out, atol=1e-6)


def test_mix_validation() -> None:
    clip = PlacedClip(tone(8000, 0.5), 8000, 0.0, 1.0)
    with pytest.raises(InputError, match="outside the video") as e:
        mix(1000, 8000, [PlacedClip(clip.samples, 8000, 1000.0)])
    one_line(e)
    with pytest.raises(InputError, match="outside the video"):
        mix(1000, 8000, [PlacedClip(clip.samples, 8000, -5.0)])
    with pytest.raises(InputError, match="outside 0..2") as e:
        mix(1000, 8000, [PlacedClip(clip.samples, 8000, 0.0, 2.5)])
    one_line(e)
    with pytest.raises(InputError, match="empty"):
        mix(1000, 8000, [PlacedClip(np.zeros(0, np.float32), 8000, 0.0)])


def test_limiter_keeps_peaks_under_ceiling_without_clipping() -> None:
    sr = 48000
    loud = np.concatenate(
        [tone(sr, 0.5, 300, 0.3), tone(sr, 0.5, 300, 1.8), tone(sr, 1.0, 300, 0.3)]
    )
    y = limit_peaks(loud, sr)
    assert np.abs(y).max() <= CEIL + 1e-6
    # Not hard clipping: the loud part keeps a sine shape (few samples sit at the ceiling).
    seg = y[int(0.6 * sr) : int(0.9 * sr)]
    assert np.mean(np.abs(seg) > CEIL - 1e-4) < 0.05  # a hard clip would flatten ~60%
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    f = np.fft.rfftfreq(seg.size, 1 / sr)
    fund = spec[np.abs(f - 300) < 20].max()
    harm = spec[(f > 500) & (f < 5000)].max()
    assert harm < fund * 10 ** (-40 / 20)
    # Quiet input well after the peak is untouched once the gain has recovered.
    np.testing.assert_array_equal(y[int(1.8 * sr) :], loud[int(1.8 * sr) :])


def test_limiter_leaves_quiet_signals_bit_identical() -> None:
    x = np.stack([tone(44100, 1.0, 500, 0.85), tone(44100, 1.0, 700, 0.2)], axis=1)
    np.testing.assert_array_equal(limit_peaks(x, 44100), x)


def test_limiter_on_summed_clips_in_mix() -> None:
    sr = 16000
    a = tone(sr, 1.0, 220, 0.9)
    out = mix(1000, sr, [PlacedClip(a, sr, 0.0, 2.0), PlacedClip(a, sr, 0.0, 1.0)])
    assert np.abs(out).max() <= CEIL + 1e-6
    assert np.abs(out[sr // 4 :]).max() > 0.8 * CEIL


def test_limiter_in_blocks_equals_the_limiter_on_the_whole_track(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter runs block by block (memory); its look-ahead, release and smoothing
    carry across block edges, so a peak that straddles one is limited exactly as if the
    track were one block, and the gain never jumps at an edge."""
    import lipdub.media.audio as audio_mod

    sr = 48000
    block = audio_mod._BLOCK
    x = np.stack([tone(sr, 2.5 * block / sr, 300, 0.3), tone(sr, 2.5 * block / sr, 500, 0.2)],
                 axis=1)
    # A burst across the first edge, one that ends just before the second (its release
    # runs on into the next block).
    for at in (block - 40, 2 * block - 410):
        x[at : at + 400] *= 6.0
    y = limit_peaks(x, sr)
    monkeypatch.setattr(audio_mod, "_BLOCK", 1 << 30)
    whole = limit_peaks(x, sr)
    np.testing.assert_allclose(y, whole, atol=1e-6)
    assert np.abs(y).max() <= CEIL + 1e-6
    loud = np.abs(x[:, 0]) > 0.05
    gain = y[loud, 0] / x[loud, 0]
    assert np.abs(np.diff(gain)).max() < 0.05  # no jump at either edge (a reset is ~0.5)
    # Far after the last burst the gain is back to exactly 1.
    np.testing.assert_array_equal(y[-sr // 2 :], x[-sr // 2 :])


def test_writer_track_is_whole_faithful_and_interleaved(tmp_path: Path) -> None:
    """The AAC track is encoded in its own thread and muxed as the video reaches it: the
    file holds every second of it, the tone reads back, and neither stream runs more than
    a second ahead of the other in the file (a player streams it without seeking)."""
    from lipdub.media.video import VideoWriter

    sr, fps, seconds = 48000, 25, 8
    left = tone(sr, seconds, 440.0)
    track = np.stack([left, tone(sr, seconds, 660.0)], axis=1)
    out = tmp_path / "w.mp4"
    with VideoWriter(out, 64, 48, fps, audio=track, sample_rate=sr) as w:
        for i in range(seconds * fps):
            w.write(np.full((48, 64, 3), i % 255, np.uint8))
    back = read_video_audio(out, sr)
    assert back is not None and abs(len(back) / sr - seconds) < 0.05
    mid = back[sr : 7 * sr, 0]
    spec = np.abs(np.fft.rfft(mid))
    assert abs(np.argmax(spec) * sr / len(mid) - 440) < 2
    with av.open(str(out)) as c:
        order = [(p.stream.type, float(p.pts * p.time_base)) for p in c.demux()
                 if p.pts is not None]
    latest = {"video": 0.0, "audio": 0.0}
    for kind, t in order:
        latest[kind] = max(latest[kind], t)
        assert abs(latest["video"] - latest["audio"]) < 1.0 or t < 1.0


def test_a_failed_render_stops_its_writers_audio_thread(tmp_path: Path) -> None:
    """A render that fails after a few frames gives up its writer: the audio thread ends
    there, not after encoding the rest of a long track for a file that is thrown away."""
    import threading
    import time

    from lipdub.media.video import BackgroundWriter, VideoWriter

    # Four minutes of noise (silence costs AAC nothing): ~10 s of encoding here.
    long = np.random.default_rng(0).uniform(-0.3, 0.3, (48000 * 240, 2)).astype(np.float32)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="render failed"), BackgroundWriter(
            VideoWriter(tmp_path / "early.mp4", 64, 48, 25, audio=long)) as w:
        for _ in range(5):
            w.write(np.zeros((48, 64, 3), np.uint8))
        raise RuntimeError("render failed")
    assert time.perf_counter() - t0 < 4.0
    assert not any(t.name == "lipdub-audio" and t.is_alive() for t in threading.enumerate())


def test_new_speech_loses_its_dc_offset(tmp_path: Path) -> None:
    """Speech recorded with a constant offset: the decoded track is centred on zero (the
    offset would otherwise be mixed into the whole output), the speech itself kept."""
    sr = 16000
    speech = tone(sr, 1.0, amp=0.3)
    path = encode(tmp_path / "dc.wav", "pcm_s16le", sr, speech + 0.2, layout="mono")
    out = decode_audio(path, sr, 1)
    assert abs(float(out.mean())) < 1e-4
    np.testing.assert_allclose(out[:, 0], speech, atol=2e-3)

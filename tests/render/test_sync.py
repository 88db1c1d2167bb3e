"""sync(): frame count, duration, audio mix, untouched pixels, windows, mouth behaviour."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import lipdub
from lipdub.faces import models
from lipdub.faces.geometry import mouth_opening
from lipdub.faces.session import Session
from lipdub.media.audio import decode_audio
from tests.conftest import media
from tests.mediagen import write_video

SR = 48000


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def wav(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=sr)
        s.layout = "mono"
        a = (np.clip(x, -1, 1) * 32767).astype(np.int16)[None, :]
        f = av.AudioFrame.from_ndarray(a, format="s16", layout="mono")
        f.sample_rate = sr
        for p in s.encode(f):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def lower_face_mask(session: Session, frame: int, shape: tuple[int, int],
                    grow: float) -> np.ndarray:
    """Lower-face region from the source landmarks, dilated by ``grow`` x face width."""
    m = np.zeros(shape, np.uint8)
    for f in session.faces:
        row = f.track.index_of(frame)
        if row is None:
            continue
        lm = f.track.landmarks[row]
        pts = np.concatenate([lm[1:16], lm[29:36]]).astype(np.int32)
        cv2.fillConvexPoly(m, cv2.convexHull(pts), 1)
        r = int(grow * (lm[16, 0] - lm[0, 0]))
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return m.astype(bool)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def toned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Session]:
    """A face (a real photo, drifting slowly) with a 440 Hz tone as its sound track."""
    d = tmp_path_factory.mktemp("toned")
    img = cv2.cvtColor(cv2.imread(str(media("facerecognition__obama.jpg"))), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (320, 400))

    def draw(i: int) -> np.ndarray:
        canvas = np.full((432, 480, 3), 90, np.uint8)
        x = 60 + int(10 * np.sin(i / 12))
        canvas[16:416, x : x + 320] = img
        return canvas

    t = np.arange(int(4.0 * SR)) / SR
    video = write_video(d / "toned.mp4", 100, (480, 432), draw,
                        audio=(0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    return video, lipdub.identify(video, out_dir=d / "session")


def band_amplitude(x: np.ndarray, f0: float, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    k = int(np.argmin(np.abs(freqs - f0)))
    return float(spec[k - 2 : k + 3].max() * 2 / np.hanning(len(x)).sum())


def test_output_format_and_audio_mix(toned: tuple[Path, Session], tmp_path: Path) -> None:
    video, session = toned
    t = np.arange(int(2.0 * SR)) / SR
    clip = wav(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    out = tmp_path / "out.mp4"
    r = lipdub.sync(video, [lipdub.FaceAudio("face_001", clip, start_ms=500, end_ms=1500,
                                             insert_ms=1000, volume=0.5)],
                    out_path=out, session=session, original_volume=0.5)
    src, dst = frames_of(video), frames_of(out)
    assert len(dst) == len(src) == r.frame_count == 100
    assert dst[0].shape == src[0].shape
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and v.format.name == "yuv420p"
        assert float(v.average_rate) == pytest.approx(25.0)
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
    audio = decode_audio(out, SR, 1)[:, 0]
    assert abs(len(audio) / SR - 4.0) < 0.1
    # Original at half volume everywhere; the clip (1 kHz x 0.3 x 0.5) only in 1.0-2.0 s.
    inside = audio[int(1.2 * SR) : int(1.8 * SR)]
    before = audio[int(0.2 * SR) : int(0.8 * SR)]
    after = audio[int(2.4 * SR) : int(3.4 * SR)]
    assert band_amplitude(inside, 440) == pytest.approx(0.1, rel=0.1)
    assert band_amplitude(inside, 1000) == pytest.approx(0.15, rel=0.1)
    assert band_amplitude(before, 440) == pytest.approx(0.1, rel=0.1)
    assert band_amplitude(before, 1000) < 0.005
    assert band_amplitude(after, 1000) < 0.005


def test_only_the_lower_face_changes_and_only_inside_the_window(tmp_path: Path) -> None:
    name = "videoretalking__face_5.mp4"
    session = lipdub.identify(media(name))
    out = tmp_path / "out.mp4"
    lipdub.sync(media(name), [lipdub.FaceAudio("face_001", media("sadtalker__deyu.wav"),
                                               start_ms=0, end_ms=2000, insert_ms=1500)],
                out_path=out, session=session)
    src, dst = frames_of(media(name)), frames_of(out)
    assert len(src) == len(dst)
    fps = session.video.fps
    face = session.faces[0]
    inside, outside_window = [], []
    for i in range(0, len(src), 3):
        mask = lower_face_mask(session, i, src[i].shape[:2], grow=0.15)
        assert psnr(src[i][~mask], dst[i][~mask]) > 38.0, i
        lm = face.track.landmarks[face.track.index_of(i)]
        x0, y0 = lm[48:68].min(0).astype(int) - 4
        x1, y1 = lm[48:68].max(0).astype(int) + 4
        diff = float(np.abs(src[i][y0:y1, x0:x1].astype(int)
                            - dst[i][y0:y1, x0:x1].astype(int)).mean())
        t = i * 1000 / fps
        if 1700 <= t < 3300:
            inside.append(diff)
        elif t < 1300 or t >= 3700:
            outside_window.append(diff)
    assert max(outside_window) < 5.0  # encoding loss only
    assert np.mean(inside) > 3 * np.mean(outside_window)


def test_multi_face_changes_each_face_only_in_its_window(tmp_path: Path) -> None:
    name = "vasp__combine001.mp4"
    session = lipdub.identify(media(name))
    out = tmp_path / "multi.mp4"
    lipdub.sync(media(name), [
        lipdub.FaceAudio("face_001", media("sadtalker__deyu.wav"), 0, 1500, insert_ms=0),
        lipdub.FaceAudio("face_002", media("videoretalking__audio_1.wav"), 0, 1600,
                         insert_ms=2800),
    ], out_path=out, session=session)
    src, dst = frames_of(media(name)), frames_of(out)
    fps = session.video.fps

    def region_diff(face_id: str, i: int) -> float:
        f = session.face(face_id)
        row = f.track.index_of(i)
        assert row is not None
        lm = f.track.landmarks[row]
        x0, y0 = lm[48:68].min(0).astype(int) - 4
        x1, y1 = lm[48:68].max(0).astype(int) + 4
        a, b = src[i][y0:y1, x0:x1].astype(int), dst[i][y0:y1, x0:x1].astype(int)
        return float(np.abs(a - b).mean())

    def frames_between(a_ms: float, b_ms: float) -> list[int]:
        return [i for i in range(len(src)) if a_ms <= i * 1000 / fps < b_ms]

    one_in = [region_diff("face_001", i) for i in frames_between(300, 1300)]
    one_out = [region_diff("face_001", i) for i in frames_between(1800, 4700)]
    two_in = [region_diff("face_002", i) for i in frames_between(3000, 4300)]
    two_out = [region_diff("face_002", i) for i in frames_between(0, 2500)]
    assert np.mean(one_in) > 3 * max(np.mean(one_out), 1.0)
    assert np.mean(two_in) > 3 * max(np.mean(two_out), 1.0)
    assert max(one_out) < 4.0 and max(two_out) < 4.0
    # The third face is never touched.
    f3 = session.face("face_003")
    for i in f3.track.frames[::5]:
        lm = f3.track.landmarks[f3.track.index_of(int(i))]
        x0, y0 = lm[48:68].min(0).astype(int) - 4
        x1, y1 = lm[48:68].max(0).astype(int) + 4
        d = np.abs(src[i][y0:y1, x0:x1].astype(int) - dst[i][y0:y1, x0:x1].astype(int))
        assert d.mean() < 4.0


def measured_opening(path: Path) -> np.ndarray:
    sp = models.landmark_predictor()
    out = []
    with models.hog_detector() as det:
        for rgb in frames_of(path):
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            d = det(gray, 0)
            if not d:
                out.append(np.nan)
                continue
            s = sp(gray, d[0])
            out.append(float(mouth_opening(np.array([(p.x, p.y) for p in s.parts()]))))
    return np.array(out)


def test_mouth_closed_in_silence_open_in_speech(tmp_path: Path) -> None:
    name = "videoretalking__face_3.mp4"
    speech = decode_audio(media("videoretalking__audio_1.wav"), SR, 1)[:, 0]
    # 1.6 s speech, 1.4 s silence, 2 s speech: the silence must show a resting mouth.
    x = np.concatenate([speech[: int(1.6 * SR)], np.zeros(int(1.4 * SR), np.float32),
                        speech[int(1.6 * SR) : int(3.6 * SR)]])
    audio = wav(tmp_path / "gappy.wav", x)
    out = tmp_path / "out.mp4"
    lipdub.sync(media(name), [lipdub.FaceAudio("face_001", audio)], out_path=out,
                original_volume=0.0)
    opening = measured_opening(out)
    fps = 25.0
    t = np.arange(len(opening)) * 1000 / fps
    silent = opening[(t >= 1900) & (t < 2800)]
    frame_loud = np.array([np.sqrt(np.mean(x[int(i * SR / fps) : int((i + 1) * SR / fps)] ** 2))
                           if int(i * SR / fps) < len(x) else 0.0 for i in range(len(opening))])
    loud = opening[frame_loud > np.percentile(frame_loud[frame_loud > 0], 75)]
    assert np.nanmean(silent) < 0.06
    assert np.nanmean(loud) > np.nanmean(silent) + 0.05


def test_cli_sync_json_and_preview(tmp_path: Path) -> None:
    out, prev = tmp_path / "o.mp4", tmp_path / "p.jpg"
    r = subprocess.run([sys.executable, "-m", "lipdub.cli", "sync",
                        str(media("videoretalking__face_5.mp4")),
                        str(media("sadtalker__japanese.wav")), "--end-ms", "3000",
                        "-o", str(out), "--json", "--preview", str(prev)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["faces"][0]["face_id"] == "face_001" and doc["frame_count"] == len(frames_of(out))
    img = cv2.imread(str(prev))
    assert img is not None and img.shape[1] > 400


@pytest.mark.parametrize("case", ["no_audio_stream", "empty_clip", "window_outside",
                                  "insert_outside", "unknown_face"])
def test_bad_input_one_line_errors(case: str, toned: tuple[Path, Session], tmp_path: Path) -> None:
    video, session = toned
    speech = media("videoretalking__audio_1.wav")
    silent_video = write_video(tmp_path / "noaudio.mp4", 10, (64, 64),
                               lambda i: np.zeros((64, 64, 3), np.uint8))
    fa = {
        "no_audio_stream": lipdub.FaceAudio("face_001", silent_video),
        "empty_clip": lipdub.FaceAudio("face_001", speech, start_ms=1000, end_ms=1000),
        "window_outside": lipdub.FaceAudio("face_001", speech, start_ms=9000, end_ms=12000),
        "insert_outside": lipdub.FaceAudio("face_001", speech, insert_ms=60_000),
        "unknown_face": lipdub.FaceAudio("face_009", speech),
    }[case]
    words = {"no_audio_stream": "no audio stream", "empty_clip": "outside the audio",
             "window_outside": "outside the audio", "insert_outside": "outside the video",
             "unknown_face": "Unknown face_id"}[case]
    with pytest.raises(lipdub.InputError) as e:
        lipdub.sync(video, [fa], out_path=tmp_path / "x.mp4", session=session)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "x.mp4").exists()


def test_still_face_opens_by_geometric_fallback(toned: tuple[Path, Session],
                                                tmp_path: Path) -> None:
    """A face that never opens its mouth in the source (a photo) still speaks."""
    video, session = toned
    out = tmp_path / "still.mp4"
    lipdub.sync(video, [lipdub.FaceAudio("face_001", media("videoretalking__audio_1.wav"),
                                         end_ms=3500)], out_path=out, session=session)
    src_open = float(np.nanmedian(measured_opening(video)))
    out_open = measured_opening(out)
    assert np.nanpercentile(out_open, 90) > src_open + 0.08
    assert np.nanpercentile(out_open, 10) < src_open + 0.04  # and it closes again


def test_a_session_of_another_video_is_refused(toned: tuple[Path, Session],
                                               tmp_path: Path) -> None:
    _, session = toned
    with pytest.raises(lipdub.InputError, match="made from another video"):
        lipdub.sync(media("videoretalking__face_5.mp4"),
                    [lipdub.FaceAudio("face_001", media("videoretalking__audio_1.wav"))],
                    out_path=tmp_path / "x.mp4", session=session)


def test_cli_preview_shows_every_face_synced(tmp_path: Path) -> None:
    """Issue 23: a multi-face --preview showed face_001 only."""
    video, sess = media("vasp__combine001.mp4"), tmp_path / "session"
    r = subprocess.run([sys.executable, "-m", "lipdub.cli", "identify", str(video),
                        "--out", str(sess), "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert [f["face_id"] for f in json.loads(r.stdout)["faces"]][:2] == ["face_001", "face_002"]

    def preview(*faces: str) -> np.ndarray:
        prev = tmp_path / f"{'-'.join(faces)}.jpg"
        args = []
        for face in faces:
            args += ["--face", f"{face}={media('videoretalking__audio_1.wav')}", "--end-ms",
                     "2000"]
        r = subprocess.run([sys.executable, "-m", "lipdub.cli", "sync", str(video), *args,
                            "--session", str(sess), "-o", str(tmp_path / "o.mp4"),
                            "--preview", str(prev)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        img = cv2.imread(str(prev))
        assert img is not None
        return img

    one, two = preview("face_001"), preview("face_001", "face_002")
    # Two faces: a before row and an after row each, one face's block under the other.
    assert two.shape[0] > 1.7 * one.shape[0], (one.shape, two.shape)
    top = two[: one.shape[0], : one.shape[1]].astype(int)
    assert np.abs(top - one.astype(int)).mean() < 12  # face_001's block comes first

"""identify() on the real clips of ../shared/media."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

import lipdub
from lipdub.faces import models
from lipdub.faces.session import Session
from tests.conftest import media
from tests.mediagen import crop_video, enters_and_leaves, no_faces, pan_zoom, write_video

SINGLE = [
    "videoretalking__face_2.mp4",
    "videoretalking__face_3.mp4",
    "videoretalking__face_4.mp4",
    "videoretalking__face_5.mp4",
    "sadtalker__WDA_KatieHill_000.mp4",
    "infinitetalk__ref_video.mp4",
    "liveportrait__d20.mp4",
]

_cache: dict[str, Session] = {}


def session_of(name: str, tmp_root: Path) -> Session:
    if name not in _cache:
        _cache[name] = lipdub.identify(media(name), out_dir=tmp_root / name)
    return _cache[name]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sessions")


@pytest.mark.parametrize("name", SINGLE)
def test_single_person_clips_have_exactly_one_face(name: str, root: Path) -> None:
    s = session_of(name, root)
    assert [f.face_id for f in s.faces] == ["face_001"]
    face = s.faces[0]
    # A talking head is visible nearly all the time.
    assert face.end_ms - face.start_ms >= 0.9 * s.video.duration_ms
    assert len(face.track) >= 0.9 * s.video.frame_count
    assert (root / name / "face_001.jpg").stat().st_size > 2000


def _detector_boxes(path: Path, every: int = 10) -> dict[int, list[tuple[int, int, int, int]]]:
    """Independent check: dlib HOG at full resolution on sampled frames."""
    import av

    boxes = {}
    with models.hog_detector() as det, av.open(str(path)) as c:
        for i, f in enumerate(c.decode(c.streams.video[0])):
            if i % every == 0:
                gray = f.to_ndarray(format="gray")
                boxes[i] = [(d.left(), d.top(), d.right(), d.bottom()) for d in det(gray, 1)]
    return boxes


@pytest.mark.parametrize("name", ["videoretalking__face_3.mp4", "liveportrait__d20.mp4"])
def test_mouth_landmarks_lie_inside_independent_face_box(name: str, root: Path) -> None:
    s = session_of(name, root)
    track = s.faces[0].track
    checked = 0
    for frame, boxes in _detector_boxes(media(name), every=4).items():
        row = track.index_of(frame)
        if row is None or len(boxes) != 1:
            continue
        x0, y0, x1, y1 = boxes[0]
        m = 0.1 * (x1 - x0)  # HOG boxes are tight: allow a tenth of the face
        mouth = track.landmarks[row, 48:68]
        assert (mouth[:, 0] > x0 - m).all() and (mouth[:, 0] < x1 + m).all(), frame
        assert (mouth[:, 1] > y0 - m).all() and (mouth[:, 1] < y1 + m).all(), frame
        checked += 1
    assert checked >= 10


def test_three_people_side_by_side(root: Path) -> None:
    s = session_of("vasp__combine001.mp4", root)
    assert [f.face_id for f in s.faces] == ["face_001", "face_002", "face_003"]
    centres = sorted(float(np.median(f.track.boxes[:, 0] + f.track.boxes[:, 2]) / 2)
                     for f in s.faces)
    # One face in each third of the 672-px-wide composite.
    assert [int(c // 224) for c in centres] == [0, 1, 2]


def test_two_people_from_photo_with_motion(tmp_path: Path) -> None:
    video = pan_zoom(media("facerecognition__two_people.jpg"), tmp_path / "two.mp4")
    s = lipdub.identify(video, out_dir=tmp_path / "s")
    assert len(s.faces) == 2
    a, b = s.faces
    assert np.linalg.norm(a.embedding - b.embedding) > 0.6  # never merged
    assert all(f.end_ms - f.start_ms > 2000 for f in s.faces)


def _photo_embedding(path: Path) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    with models.hog_detector() as det:
        d = det(rgb, 1)
    assert len(d) >= 1
    shape = models.landmark_predictor()(rgb, d[0])
    return np.asarray(models.face_encoder().compute_face_descriptor(rgb, shape))


def test_rapper_is_face_001_in_hamilton_clip(root: Path) -> None:
    s = session_of("facerecognition__short_hamilton_clip.mp4", root)
    ref = _photo_embedding(media("facerecognition__lin-manuel-miranda.png"))
    dists = [float(np.linalg.norm(f.embedding - ref)) for f in s.faces]
    assert dists[0] < 0.6, dists
    assert int(np.argmin(dists)) == 0
    # The clip has scene cuts: ids must still cover the other shots' faces.
    assert len(s.faces) >= 2


@pytest.mark.parametrize(("first", "last"), [(31, 70), (41, 81)])
def test_face_entering_and_leaving_mid_shot_spans_exactly_its_frames(
    tmp_path: Path, first: int, last: int
) -> None:
    # Searches for new faces run every 12 frames and confirmations every 6; neither
    # phase may show in the span (31 and 41 fall between searches, 70 and 81 between
    # confirmations).
    video = enters_and_leaves(media("videoretalking__face_2.mp4"), tmp_path / "v.mp4",
                              first, last)
    s = lipdub.identify(video)
    assert len(s.faces) == 1
    frames = s.faces[0].track.frames
    assert (int(frames[0]), int(frames[-1])) == (first, last)
    assert len(frames) == frames[-1] - frames[0] + 1  # no gap inside


def test_no_faces_is_a_clean_error(tmp_path: Path) -> None:
    video = no_faces(tmp_path / "none.mp4")
    with pytest.raises(lipdub.NoFacesError, match="^Face detection failed: no faces found$"):
        lipdub.identify(video)


def test_same_input_gives_same_ids(root: Path, tmp_path: Path) -> None:
    first = session_of("vasp__combine001.mp4", root)
    again = lipdub.identify(media("vasp__combine001.mp4"))
    assert [(f.face_id, f.segments) for f in again.faces] == [
        (f.face_id, f.segments) for f in first.faces
    ]


def test_session_round_trip(root: Path) -> None:
    s = session_of("videoretalking__face_5.mp4", root)
    back = Session.load(root / "videoretalking__face_5.mp4")
    assert back.session_id == s.session_id
    assert back.video == s.video
    np.testing.assert_array_equal(back.faces[0].track.frames, s.faces[0].track.frames)
    np.testing.assert_allclose(back.faces[0].track.landmarks, s.faces[0].track.landmarks)
    assert back.faces[0].segments == s.faces[0].segments
    np.testing.assert_allclose(back.frame_times_ms, s.frame_times_ms)
    v = back.video
    assert (v.width, v.height, v.fps, v.has_audio) == (524, 524, 25.0, True)
    assert abs(v.duration_ms - 4900) <= 100


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lipdub.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_json_and_contact_sheet(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.jpg"
    r = _cli("identify", str(media("vasp__combine001.mp4")), "--out", str(tmp_path / "s"),
             "--json", "--contact-sheet", str(sheet))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) >= {"session_id", "video", "faces"}
    assert set(doc["video"]) == {"duration_ms", "fps", "width", "height", "has_audio"}
    assert [f["face_id"] for f in doc["faces"]] == ["face_001", "face_002", "face_003"]
    for f in doc["faces"]:
        assert set(f) == {"face_id", "start_time", "end_time", "segments", "thumbnail",
                          "not_renderable"}
        assert Path(f["thumbnail"]).is_file()
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[1] >= 3 * 200


def _zero_frame_video(path: Path) -> Path:
    import av

    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD = {
    "empty": (lambda d: _write(d / "empty.mp4", b""), "empty"),
    "text": (lambda d: _write(d / "text.mp4", b"hello, not a video\n" * 20),
             "not a readable video"),
    "truncated": (
        lambda d: _write(d / "trunc.mp4",
                         media("videoretalking__face_2.mp4").read_bytes()[:150_000]),
        "truncated or corrupt",
    ),
    "audio_only": (lambda d: media("sadtalker__deyu.wav"), "audio-only"),
    "zero_frames": (lambda d: _zero_frame_video(d / "zero.mkv"), "no frames"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_error(case: str, tmp_path: Path) -> None:
    make, words = BAD[case]
    path = make(tmp_path)
    with pytest.raises(lipdub.MediaError) as e:
        lipdub.identify(path)
    msg = str(e.value)
    assert words in msg and "\n" not in msg
    r = _cli("identify", str(path))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr


def test_moving_face_video_keeps_flat_geometry(tmp_path: Path) -> None:
    """A synthetic clip the tests write: the face track is continuous through motion."""
    img = cv2.cvtColor(cv2.imread(str(media("facerecognition__obama.jpg"))), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (364, 455))

    def draw(i: int) -> np.ndarray:
        canvas = np.full((480, 640, 3), 40, np.uint8)
        x = 40 + i * 3
        canvas[10:465, x : x + 364] = img
        return canvas

    video = write_video(tmp_path / "moving.mp4", 50, (640, 480), draw)
    s = lipdub.identify(video)
    assert len(s.faces) == 1
    xs = s.faces[0].track.landmarks[:, 30, 0]  # nose tip follows the pan, 3 px a frame
    assert len(xs) >= 48
    np.testing.assert_allclose(np.diff(xs).mean(), 3.0, atol=0.5)


def test_rotation_metadata_is_honoured(tmp_path: Path) -> None:
    """A phone-style clip stored sideways with a display rotation: the face is found
    upright (HOG finds no sideways or upside-down faces) and the size is the displayed one."""
    import av

    upright = cv2.cvtColor(cv2.imread(str(media("facerecognition__obama.jpg"))),
                           cv2.COLOR_BGR2RGB)
    upright = cv2.resize(upright, (320, 400))
    stored = np.ascontiguousarray(np.rot90(upright, -1))  # 400 wide, 320 high, sideways
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 400, 320, "yuv420p"
        s.set_display_rotation(90)  # displayed = stored turned 90 degrees counter-clockwise
        for i in range(30):
            f = av.VideoFrame.from_ndarray(stored, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    session = lipdub.identify(path)
    assert (session.video.width, session.video.height, session.video.rotation) == (320, 400, 90)
    assert len(session.faces) == 1
    lm = session.faces[0].track.landmarks[0]
    assert lm[36:48, 1].mean() < lm[48:68, 1].mean()  # eyes above the mouth: upright


def test_variable_frame_rate_uses_timestamps(tmp_path: Path) -> None:
    import av

    img = cv2.cvtColor(cv2.imread(str(media("facerecognition__obama.jpg"))), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (320, 400))
    pts = [0, 40, 80, 200, 240, 400, 433, 466, 500, 700, 740, 780, 820, 860, 900]
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 400, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for p_ms in pts:
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = p_ms, Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    session = lipdub.identify(path)
    np.testing.assert_allclose(session.frame_times_ms, pts, atol=1.5)
    assert session.video.frame_count == len(pts)
    seg = session.faces[0].segments
    assert seg[0][0] == 0 and seg[-1][1] >= 900


def test_min_visible_time_is_a_setting(tmp_path: Path) -> None:
    from lipdub.faces.identify import IdentifySettings

    name = "facerecognition__short_hamilton_clip.mp4"
    r = _cli("identify", str(media(name)), "--json", "--min-visible-ms", "3000",
             "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    faces = json.loads(r.stdout)["faces"]
    # The performer is on stage for about 4 s; the audience's faces under a second each.
    assert [f["face_id"] for f in faces] == ["face_001"]
    assert len(session_of(name, tmp_path).faces) >= 2  # the default keeps them
    assert IdentifySettings().min_visible_ms == 400


def test_cli_refuses_a_clip_shorter_than_the_api_does(tmp_path: Path) -> None:
    """A 0.3 s clip: the API refuses it (1 s minimum), and so does the CLI, saying why."""
    short = crop_video(media("videoretalking__face_5.mp4"), tmp_path / "short.mp4", 0.3)
    for args in (["identify", str(short)],
                 ["sync", str(short), str(media("videoretalking__audio_1.wav")),
                  "-o", str(tmp_path / "out.mp4")]):
        r = _cli(*args)
        assert r.returncode == 2
        assert "at least 1 s" in r.stderr and "ms" in r.stderr
        assert not (tmp_path / "out.mp4").exists()

"""Timing from the presentation: trimmed files (edit lists) and start offsets between the
tracks are measured, decoded and re-rendered as a player shows them."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

import lipdub
from lipdub.media.audio import read_video_audio
from lipdub.media.video import iter_frames, probe
from tests.conftest import media
from tests.media.variants import trimmed, video_late

SR = 48000
CLIP = "videoretalking__face_2.mp4"  # 126 frames stored, 25 fps


@pytest.fixture(scope="module")
def trimmed_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trimmed(media(CLIP), tmp_path_factory.mktemp("trim") / "trimmed.mp4", 1.3)


def test_a_trimmed_mp4_lasts_what_a_player_shows(trimmed_clip: Path) -> None:
    with av.open(str(trimmed_clip)) as c:  # the cut frames are still stored
        stored = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    info = probe(trimmed_clip)
    frames = list(iter_frames(trimmed_clip))
    assert stored - info.frame_count >= 30  # 1.3 s of frames are not shown
    assert info.frame_count == len(frames)
    assert info.duration_ms == pytest.approx(len(frames) * 40, abs=1)
    assert frames[0].time_ms == 0 and frames[-1].time_ms == pytest.approx(info.duration_ms - 40)
    sound = read_video_audio(trimmed_clip, SR)
    assert sound is not None
    assert abs(1000 * len(sound) / SR - info.duration_ms) < 60


def test_sound_starts_with_the_first_presented_frame(tmp_path: Path) -> None:
    """A picture track that starts 0.5 s after the sound: the clip's timeline starts at
    its first frame, and its sound there is what played 0.5 s into the file."""
    late = video_late(media(CLIP), tmp_path / "late.mp4", 0.5)
    assert probe(late).start_ms == pytest.approx(500, abs=1)
    whole = read_video_audio(media(CLIP), SR)
    aligned = read_video_audio(late, SR)
    assert whole is not None and aligned is not None
    assert len(whole) - len(aligned) == pytest.approx(SR // 2, abs=2)
    np.testing.assert_allclose(aligned[: 2 * SR], whole[SR // 2 : SR // 2 + 2 * SR], atol=1e-4)


def test_the_hamilton_clips_sound_is_cut_to_its_picture() -> None:
    """The shared clip's picture starts 0.84 s after its sound (a camera file's offset):
    the sound the tracks share is as long as the picture."""
    name = "facerecognition__short_hamilton_clip.mp4"
    info = probe(media(name))
    assert info.start_ms == pytest.approx(852, abs=2)
    sound = read_video_audio(media(name), SR)
    assert sound is not None
    assert abs(1000 * len(sound) / SR - info.duration_ms) < 40


def test_sync_of_a_trimmed_clip_matches_the_player(trimmed_clip: Path, tmp_path: Path) -> None:
    session = lipdub.identify(trimmed_clip)
    info = probe(trimmed_clip)
    assert session.video.duration_ms == info.duration_ms
    assert session.video.frame_count == info.frame_count
    for face in session.faces:
        assert face.track.frames.min() >= 0 and face.track.frames.max() < info.frame_count
    out = tmp_path / "out.mp4"
    r = lipdub.sync(trimmed_clip, [lipdub.FaceAudio(
        session.faces[0].face_id, media("videoretalking__audio_1.wav"), 0, 1500,
        insert_ms=300)], out_path=out, session=session)
    assert r.frame_count == info.frame_count and r.duration_ms == info.duration_ms
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.frames == info.frame_count
        assert v.duration is not None and a.duration is not None
        video_s, audio_s = float(v.duration * v.time_base), float(a.duration * a.time_base)
    assert video_s == pytest.approx(info.duration_ms / 1000, abs=0.001)
    assert abs(audio_s - video_s) < 0.05  # no frozen last frame while the speech runs on

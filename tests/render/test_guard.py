"""The guard over rendered patches refuses a patch that does not sit on the face, not one
whose mouth is wider than the mouth it covers.

A refused frame keeps its original pixels: inside a dubbed run, the person's own mouth
flashes in for a frame or more (issue 20, "a mouth like a real one"). KatieHill rounds
her lips while she turns her head around frames 70-75; dubbed with the second half of her
own speech (bench/quality.py's split test), the pasted mouth, wider than her pursed one,
reached past its corners into what the structure check judged as "the face around the
mouth", and three frames in a row showed her original mouth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import wavfile

import lipdub
from lipdub.media.audio import read_video_audio, to_mono
from lipdub.media.video import VideoWriter, iter_frames, probe
from tests.conftest import media


def test_a_mouth_wider_than_the_one_it_covers_is_kept(tmp_path: Path) -> None:
    video = media("sadtalker__WDA_KatieHill_000.mp4")
    info = probe(video)
    fps = float(info.fps)
    pcm = read_video_audio(video, 48000, 2)
    assert pcm is not None
    half = info.frame_count // 2
    first = tmp_path / "first.mp4"
    with VideoWriter(first, info.width, info.height, fps,
                     audio=pcm[: int(round(half / fps * 48000))], crf=16) as out:
        for fr in iter_frames(video):
            if fr.index >= half:
                break
            out.write(fr.rgb)
    second = to_mono(pcm)[int(round(half / fps * 48000)):]
    wav = tmp_path / "second.wav"
    wavfile.write(str(wav), 48000, (np.clip(second, -1, 1) * 32767).astype(np.int16))
    session = lipdub.identify(first)
    res = lipdub.sync(first, [lipdub.FaceAudio(session.faces[0].face_id, wav,
                                               end_ms=half / fps * 1000 - 1)],
                      out_path=tmp_path / "dub.mp4", session=session, original_volume=0.0)
    face = res.faces[0]
    assert face["frames_changed"] >= 0.9 * half
    assert face["frames_rejected"] == 0

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


def test_after_a_refused_frame_the_next_is_judged_against_the_last_kept_one() -> None:
    """A refused frame shows its original pixels; the patch after it used to be judged
    against them, and a dub differs from the original away from the mouth too (jaw,
    chin): every next patch read as a jump, and one refused frame of face_4 became seven
    (bench/articulation.py). Now the next patch is judged against the last output kept."""
    from lipdub.render.bank import BankBuilder
    from lipdub.render.compose import Compositor
    from lipdub.render.engine import _Guarded
    from lipdub.render.targets import render_targets
    from tests.render.test_sync import frames_of

    video = media("videoretalking__face_3.mp4")
    track = lipdub.identify(video).faces[0].track
    frames = frames_of(video)
    builder = BankBuilder(track.landmarks, track.frames, track.pose, cap=60)
    for i in range(min(len(frames), int(track.frames[-1]) + 1)):
        if builder.wants(i):
            builder.add(i, frames[i])
    bank = builder.build()
    targets = render_targets(track.landmarks, track.frames, bank.canonical.template)
    guard = _Guarded(Compositor(bank), "face", targets)
    origin = np.zeros(2)
    row = 40
    k = int(np.argmin(np.abs(bank.opening - 0.05)))

    def render(r: int, source: np.ndarray | None = None) -> None:
        f = int(track.frames[r])
        guard.render(frames[f].copy(), source, f, r, targets.landmarks[r], origin, k, 1.0,
                     float(bank.opening[k]), float(bank.width[k]))

    render(row)
    assert guard.rejected == 0 and guard.prev_out is not None
    kept = guard.prev_out
    # The next frame's source is unlike its frame (colour shifted): every patch on it
    # fails the colour check, and the frame keeps its (original) pixels.
    f = int(track.frames[row + 1])
    shifted = np.clip(frames[f] * np.array([1.5, 1.0, 0.7]), 0, 255).astype(np.uint8)
    render(row + 1, source=shifted)
    assert guard.rejected == 1
    assert guard.prev_out is kept
    render(row + 2)
    assert guard.rejected == 1

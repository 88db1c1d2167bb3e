"""Real recordings: do the dubbed lips close where a phone recogniser hears /p b m/, as
often as real speakers' own lips do?

    make bench-deps                                   # .venv-mp (MediaPipe), pocketsphinx
    .venv/bin/python -m bench.real_phones

Real speech has no exact phone times, so they come from a recogniser: pocketsphinx's
English acoustic model in phone-loop mode (its wheel ships the model), CMU phones mapped
to IPA (tools/othertts.to_ipa). A recogniser misplaces and invents phones, so the figure
that means something is the gap between aligned and shifted phones, and a real speaker's
own mouth against the same recogniser is the ceiling:

  dub     each English talking head dubbed with an English recording that is not its own
          (inserted at 0, original muted): closure rate (bench/articulation.py's rule:
          the lowest opening over a /p b m/'s frames under half the speaking median) of
          the output mouth (MediaPipe, bench/motion.py) against the dub's recognised
          phones, and against the same phones shifted by 0.5 s and -0.5 s (chance).
  real    each clip's own mouth against its own recognised speech, aligned and shifted.

Target (issue 20): dub aligned >= real aligned, each well above its shifted figure.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from tools.othertts import to_ipa

from bench import articulation as A
from bench.common import CACHE, MEDIA
from bench.motion import SourceTrack, mp_points, shape
from lipdub.media.audio import decode_audio, read_video_audio, to_mono

SR = 16000
OUT = CACHE / "real_phones"
# English talking heads, each with an English recording that is not its own.
DUBS = [
    ("videoretalking__face_2.mp4", "sadtalker__RD_Radio31_000.wav"),
    ("videoretalking__face_3.mp4", "musetalk__eng.wav"),
    ("videoretalking__face_4.mp4", "videoretalking__audio_1.wav"),
    ("videoretalking__face_5.mp4", "sadtalker__RD_Radio31_000.wav"),
    ("sadtalker__WDA_KatieHill_000.mp4", "musetalk__eng.wav"),
    ("infinitetalk__ref_video.mp4", "sadtalker__RD_Radio31_000.wav"),
]
SHIFTS = (0.5, -0.5)


def recognise(x: np.ndarray) -> list[tuple[float, float, str]]:
    """(start_s, end_s, ipa) of the phones pocketsphinx hears in 16 kHz mono ``x``."""
    from pocketsphinx import Decoder, get_model_path

    m = get_model_path()
    d = Decoder(hmm=os.path.join(m, "en-us", "en-us"),
                allphone=os.path.join(m, "en-us", "en-us-phone.lm.bin"),
                lw=2.0, pip=0.3, beam=1e-20, pbeam=1e-20, samprate=SR, loglevel="FATAL")
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    out = []
    for s in d.seg():
        ipa = to_ipa(s.word.lower(), "cmu")
        if ipa is not None and s.word not in ("SIL", "+NSN+", "+SPN+"):
            out.append((s.start_frame / 100.0, (s.end_frame + 1) / 100.0, ipa))
    return out


def closure(op: np.ndarray, wd: np.ndarray, phones: list, fps: float, thr: float,
            covered: np.ndarray) -> tuple[float, float]:
    """(closure rate on aligned phones, mean over the shifted ones)."""
    aligned = A.articulation(op, wd, phones, fps, thr, covered)["close"]
    shifted = []
    for dt in SHIFTS:
        ph = [(a + dt, b + dt, p) for a, b, p in phones if a + dt >= 0]
        shifted.append(A.articulation(op, wd, ph, fps, thr, covered)["close"])
    return float(aligned), float(np.nanmean(shifted))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default="", help="outputs kept apart under this tag")
    ap.add_argument("--viseme-weights", type=Path, help="dub with this viseme model")
    args = ap.parse_args()
    if args.viseme_weights:
        from lipdub.speech.visemes import use_weights

        use_weights(str(args.viseme_weights))
    tag = f".{args.tag}" if args.tag else ""
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    print(f"{'clip':18s} {'dub audio':22s} {'dub':>6s} {'shift':>6s} {'real':>6s} {'shift':>6s}")
    for name, audio in DUBS:
        src = SourceTrack(MEDIA / name)
        n, fps = src.n, src.fps
        dur = n / fps
        own = read_video_audio(src.video, SR, 1)
        real_ph = recognise(to_mono(own)) if own is not None else []
        covered = np.ones(n, bool)
        real = closure(src.op, src.wd, real_ph, fps, src.thr, covered & src.speaking)
        x = to_mono(decode_audio(MEDIA / audio, SR, 1))[: int((dur - 0.05) * SR)]
        out = OUT / f"{src.video.stem}.{Path(audio).stem}{tag}.mp4"
        if not out.is_file():
            A.run_sync(src.video, None, MEDIA / audio, out, 0.0, np.floor(x.size / SR * 1000), 0.0)
        op, wd = shape(mp_points(out))
        m = min(n, op.size)
        dubbed = np.zeros(m, bool)
        dubbed[: int(x.size / SR * fps)] = True
        dub = closure(op[:m], wd[:m], recognise(x), fps, src.thr, dubbed)
        rows.append((name, audio, dub, real))
        print(f"{name.split('__')[-1][:18]:18s} {audio.split('__')[-1][:22]:22s} "
              f"{dub[0]:6.2f} {dub[1]:6.2f} {real[0]:6.2f} {real[1]:6.2f}", flush=True)
    d = np.array([[r[2][0], r[2][1], r[3][0], r[3][1]] for r in rows])
    mean = np.nanmean(d, axis=0)
    print(f"\nmean: dub {mean[0]:.2f} (shifted {mean[1]:.2f}), real speakers {mean[2]:.2f} "
          f"(shifted {mean[3]:.2f})    total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Still frames of a closure, a rounded vowel and an open vowel, before and after.

    .venv/bin/python -m bench.articulation_stills                  # docs/img/articulation.jpg
    .venv/bin/python -m bench.articulation_stills --before 97d6b81 --out /tmp/a.jpg

For two people (two talking heads of ../shared/media), the same phoneme-timed German speech
(bench/articulation.py's, held out of the viseme model's training) is dubbed by the engine
at ``--before`` (a temporary git worktree of that commit, run in a subprocess) and by the
engine in this tree. For each class the phoneme shown is the longest one of that class in
the speech (the most visible, chosen from the phone list alone, never from either output),
at its middle frame; both outputs are cropped with the same box around the source mouth.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from bench._clips import CACHE, MEDIA
from bench._landmarks import frames, source_landmarks
from bench.articulation import LM_CACHE, classes, synth_for
from lipdub.media.video import probe

ROOT = Path(__file__).resolve().parents[1]
PEOPLE = ["videoretalking__face_3.mp4", "liveportrait__d20.mp4"]
SHOW = [("bilabial", "/p b m/"), ("rounded", "/u o/"), ("open", "/a/")]
OUT = CACHE / "stills"

_SYNC = """
import sys, lipdub
video, audio, out = sys.argv[1:4]
s = lipdub.identify(video)
lipdub.sync(video, [lipdub.FaceAudio(s.faces[0].face_id, audio)], out_path=out,
            session=s, original_volume=0.0)
"""


def dub(src_dir: Path, video: Path, audio: Path, out: Path) -> Path:
    if not out.is_file():
        subprocess.run([sys.executable, "-c", _SYNC, str(video), str(audio), str(out)],
                       check=True, env={**os.environ, "PYTHONPATH": str(src_dir)})
    return out


def pick(phones: list, fps: float, n: int) -> dict[str, int]:
    """Middle frame of the longest phoneme of each shown class."""
    best: dict[str, tuple[float, int]] = {}
    for s, e, lab in phones:
        k = int(round((s + e) / 2 * fps))
        if k >= n:
            continue
        for cl in classes(lab):
            if cl in dict(SHOW) and (cl not in best or e - s > best[cl][0]):
                best[cl] = (e - s, k)
    return {cl: k for cl, (_, k) in best.items()}


def crop(rgb: np.ndarray, lm: np.ndarray, size: int = 180) -> np.ndarray:
    c = lm[48:68].mean(axis=0)
    half = 0.55 * float(np.linalg.norm(lm[16] - lm[0])) / 2 * 1.6
    x0, y0 = int(max(c[0] - half, 0)), int(max(c[1] - 0.75 * half, 0))
    x1, y1 = int(min(c[0] + half, rgb.shape[1])), int(min(c[1] + 1.05 * half, rgb.shape[0]))
    return cv2.resize(rgb[y0:y1, x0:x1], (size, int(size * (y1 - y0) / max(x1 - x0, 1))))


def label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((26, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="97d6b81", help="engine commit for the 'before' row")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "articulation.jpg")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt),
                        args.before], check=True, capture_output=True)
        try:
            for idx, name in enumerate(PEOPLE):
                video = MEDIA / name
                lm = source_landmarks(video, LM_CACHE)
                n = lm.shape[0]
                fps = probe(video).fps
                wav, phones, _ = synth_for("de", idx, n / fps)
                outs = {
                    "before": dub(wt / "src", video, wav, OUT / f"{video.stem}.before.mp4"),
                    "after": dub(ROOT / "src", video, wav, OUT / f"{video.stem}.after.mp4"),
                }
                picks = pick(phones, fps, n)
                for which, path in outs.items():
                    fr = list(frames(path))
                    tiles = [label(crop(fr[picks[cl]], lm[picks[cl]]), f"{which}: {text}")
                             for cl, text in SHOW if cl in picks]
                    h = max(t.shape[0] for t in tiles)
                    tiles = [cv2.copyMakeBorder(t, 0, h - t.shape[0], 2, 2,
                                                cv2.BORDER_CONSTANT, value=(255, 255, 255))
                             for t in tiles]
                    rows.append(np.hstack(tiles))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)],
                           check=False, capture_output=True)
    w = max(r.shape[1] for r in rows)
    grid = np.vstack([cv2.copyMakeBorder(r, 0, 4, 0, w - r.shape[1], cv2.BORDER_CONSTANT,
                                         value=(255, 255, 255)) for r in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Does the dubbed mouth move like the person's own, frame by frame? Measured with an
independent, unsmoothed landmark model, on the output video only.

    make bench-deps                                  # once: .venv-mp with MediaPipe
    .venv/bin/python -m bench.motion                 # 7 clips x (en, flite-awb, flite-rms)
    .venv/bin/python -m bench.motion --langs en,de,flite-awb,fest-ked --clips face_3,d20
    .venv/bin/python -m bench.motion --viseme-weights M.npz --tag ho  # another model
    .venv/bin/python -m bench.motion --split         # also the split test (real speech)
    .venv/bin/python -m bench.motion --stills docs/img/motion_worst.jpg  # what twitches

Why a second bench: bench/quality.py and bench/articulation.py measure with dlib's 68
points, the model lipdub itself tracks, selects and warps mouths by; an engine can look
right to the instrument it was built around. Here every frame of the source and of the
output goes through MediaPipe's face mesh (bench/mp_landmarks.py, its own environment,
static-image mode: no tracking, no smoothing), so one-frame events stay one frame.

Dubs: the same as bench/articulation.py (phone-timed synthetic speech, espeak-ng or
another synthesizer's voice, inserted at 0, original track muted; outputs shared through
its cache); with ``--split`` also bench/quality.py's split test (the first half of a clip
driven by the real audio of its second half).

Per clip (opening = inner-lip gap 13-14 / outer eye corners 33-263, width = corners
61-291 / the same; "speaking" = the source's own speech frames, "dubbed" = the frames the
new speech spans):
  close    share of /p b m/ whose lowest opening over the frames they cover is under half
           the person's speaking median (bench/articulation.py's rule).      >= 0.85
  contr    median opening on open vowels / on bilabials.                      >= 3
  width    spread / rounded vowels' median width.                             >= 1.10
  lag      lag (frames) maximising r(opening, phone target curve).             0 +- 1
  jumps    share of dubbed frame pairs whose |change of opening| exceeds the person's
           99th percentile (speaking source frames), over the source's own share.  <= 1.5
  osc      one-frame closures: runs of exactly one frame under the closure threshold
           whose neighbours are both open (at least the speaking median), as a share of
           all closure runs (open -> shut -> open).
           Shown for the output and for the source's own mouth.               <= 0.08
  speed    mean |change of opening| per frame on dubbed speech frames / the person's on
           their speaking frames.                                          0.85-1.15
  split    (``--split``) r of the output's opening with the real second half, minus the
           r of the untouched first half (the mouth that was there) with it.  >= +0.10
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
from scipy.io import wavfile

from bench import articulation as A
from bench.common import CACHE, CLIPS, MEDIA, pearson, speaking
from bench.quality import OUT as QUALITY_OUT
from lipdub.media.audio import read_video_audio, to_mono
from lipdub.speech.features import speech_loudness

ROOT = Path(__file__).resolve().parents[1]

MP_PYTHON = ROOT / ".venv-mp" / "bin" / "python"
LM_DIR = CACHE / "motion"
SR = 16000
DEFAULT_LANGS = ["en", "flite-awb", "flite-rms"]
# MediaPipe face-mesh indices.
UPPER_INNER, LOWER_INNER, LEFT_CORNER, RIGHT_CORNER, EYE_R, EYE_L = 13, 14, 61, 291, 33, 263
TARGETS = {"close": "≥0.85", "contr": "≥3", "width": "≥1.10", "lag": "0±1",
           "jumps": "≤1.5", "osc": "≤0.08", "speed": "0.85-1.15", "split": "≥+0.10"}


def mp_points(video: Path, x_range: tuple[int, int] | None = None) -> np.ndarray:
    """(n, 468, 2) face-mesh points of every frame, cached by the file's content."""
    if not MP_PYTHON.is_file():
        sys.exit("bench/motion.py needs MediaPipe in .venv-mp: run `make bench-deps` first")
    st = video.stat()
    key = hashlib.sha1(f"{video.resolve()}:{st.st_size}:{st.st_mtime_ns}:{x_range}".encode())
    out = LM_DIR / f"{video.stem}.{key.hexdigest()[:12]}.npz"
    if not out.is_file():
        LM_DIR.mkdir(parents=True, exist_ok=True)
        cmd = [str(MP_PYTHON), str(ROOT / "bench" / "mp_landmarks.py"), str(video), str(out)]
        if x_range is not None:
            cmd += ["--x0", str(x_range[0]), "--x1", str(x_range[1])]
        subprocess.run(cmd, check=True, capture_output=True)
    with np.load(out) as z:
        return np.asarray(z["points"], np.float64)


def shape(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(opening, width) per frame in units of the outer-eye-corner distance."""
    iod = np.linalg.norm(points[:, EYE_R] - points[:, EYE_L], axis=1)
    iod = np.where(iod > 1, iod, np.nan)
    op = np.linalg.norm(points[:, UPPER_INNER] - points[:, LOWER_INNER], axis=1) / iod
    wd = np.linalg.norm(points[:, LEFT_CORNER] - points[:, RIGHT_CORNER], axis=1) / iod
    return op, wd


def _pairs(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """|x[k+1] - x[k]| over pairs where both frames are in ``mask`` and measured."""
    d = np.abs(np.diff(x))
    ok = mask[1:] & mask[:-1] & np.isfinite(d)
    return np.asarray(d[ok])


def one_frame_closures(x: np.ndarray, mask: np.ndarray, thr: float) -> tuple[int, int]:
    """(closures that last one frame between two open frames, all closures) inside
    ``mask``. A closure is a run of frames under ``thr`` (half the speaking median);
    "open" is at least the speaking median (``2 thr``): with one threshold for both, a
    mouth hovering near it would count its jitter as closures. A run touching a frame
    outside the mask or unmeasured is not counted."""
    valid = mask & np.isfinite(x)
    shut = valid & (x < thr)
    edges = np.flatnonzero(np.diff(np.r_[0, shut.astype(np.int8), 0]))
    one = total = 0
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if a == 0 or b >= x.size or not (valid[a - 1] and valid[b]):
            continue
        total += 1
        one += int(b - a == 1 and x[a - 1] >= 2 * thr and x[b] >= 2 * thr)
    return one, total


def motion(out_op: np.ndarray, src_op: np.ndarray, src_sp: np.ndarray,
           dubbed: np.ndarray, dub_sp: np.ndarray, thr: float) -> dict[str, float]:
    d_src = _pairs(src_op, src_sp)
    p99 = float(np.percentile(d_src, 99)) if d_src.size else float("nan")
    share_src = max(float((d_src > p99).mean()), 1e-3) if d_src.size else float("nan")
    d_out = _pairs(out_op, dubbed)
    one, runs = one_frame_closures(out_op, dubbed, thr)
    one_s, runs_s = one_frame_closures(src_op, src_sp, thr)
    d_out_sp = _pairs(out_op, dubbed & dub_sp)
    return {
        "jump_share": float((d_out > p99).mean()) if d_out.size else float("nan"),
        "jumps": float((d_out > p99).mean()) / share_src if d_out.size else float("nan"),
        "osc": one / runs if runs else 0.0, "osc_n": float(one), "runs": float(runs),
        "osc_src": one_s / runs_s if runs_s else 0.0, "runs_src": float(runs_s),
        "speed": float(d_out_sp.mean() / d_src.mean()) if d_out_sp.size and d_src.size
        else float("nan"),
    }


class SourceTrack:
    """The untouched clip measured once: opening, width, its own speech frames."""

    def __init__(self, video: Path) -> None:
        self.video = video
        with av.open(str(video)) as c:
            self.fps = float(c.streams.video[0].average_rate)  # type: ignore[arg-type]
        self.op, self.wd = shape(mp_points(video))
        self.n = self.op.size
        own = read_video_audio(video, SR, 1)
        loud = speech_loudness(to_mono(own), SR, self.fps, self.n) if own is not None \
            else np.zeros(self.n)
        self.speaking = speaking(loud) & np.isfinite(self.op)
        self.thr = 0.5 * float(np.nanmedian(self.op[self.speaking]))


def evaluate(src: SourceTrack, idx: int, lang: str) -> dict[str, float]:
    wav, phones, voice = A.synth_for(lang, idx, src.n / src.fps)
    sr, pcm = wavfile.read(str(wav))
    dur = pcm.shape[0] / sr
    out = A.OUT / f"{src.video.stem}.{lang}{A.TAG}.mp4"
    if not out.is_file():
        A.run_sync(src.video, None, wav, out, 0.0, np.floor(dur * 1000) - 1, 0.0)
    op, wd = shape(mp_points(out))
    n = min(src.n, op.size)
    op, wd = op[:n], wd[:n]
    dubbed = np.arange(n) / src.fps < dur
    dub_loud = speech_loudness(pcm.astype(np.float32) / 32768.0, sr, src.fps, n)
    row = A.articulation(op, wd, phones, src.fps, src.thr, dubbed)
    row.update(motion(op, src.op[:n], src.speaking[:n], dubbed, speaking(dub_loud), src.thr))
    row["voice"] = voice  # type: ignore[assignment]
    d = np.abs(np.diff(op))
    d[~(dubbed[1:] & dubbed[:-1]) | ~np.isfinite(d)] = -1.0
    row["worst"] = float(int(np.argmax(d)) + 1)  # the frame after the largest jump
    row["out"] = str(out)  # type: ignore[assignment]
    return row


def _frames(video: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    got: dict[int, np.ndarray] = {}
    with av.open(str(video)) as c:
        for k, fr in enumerate(c.decode(c.streams.video[0])):
            if k in wanted:
                got[k] = fr.to_ndarray(format="rgb24")
            if k >= max(wanted):
                break
    return got


def still(src: SourceTrack, row: dict, width: int = 150) -> np.ndarray:
    """Source (top) and output (bottom) mouths at the frames around the output's largest
    one-frame jump: what a viewer would see twitch, if anything does."""
    import cv2

    k = int(row["worst"])
    ks = [max(k - 2, 0), k - 1, k, k + 1]
    # Framed on the source's own mouth at that frame (dlib's cached track: only to place
    # the crop).
    track = A.source_landmarks(src.video, A.LM_CACHE)
    lips = track[min(k, track.shape[0] - 1), 48:68]
    if not np.isfinite(lips).all():
        lips = np.nanmedian(track[:, 48:68], axis=0)
    cx, cy = float(lips[:, 0].mean()), float(lips[:, 1].mean())
    half = 0.9 * float(np.ptp(lips[:, 0]))
    x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    x1, y1 = int(cx + half), int(cy + half)
    rows = []
    for video in (src.video, Path(row["out"])):
        got = _frames(video, set(ks))
        tiles = [cv2.resize(np.ascontiguousarray(got[j][y0:y1, x0:x1]), (width, width))
                 if j in got else np.zeros((width, width, 3), np.uint8) for j in ks]
        rows.append(np.hstack(tiles))
    img = np.vstack(rows)
    label = f"{src.video.stem.split('__')[-1]} {row['lang']} frames {ks[0]}-{ks[-1]}"
    cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
    return img


def evaluate_split(src: SourceTrack) -> dict[str, float]:
    """The split test's output from bench/quality.py, measured here."""
    out = QUALITY_OUT / f"{src.video.stem}.split.mp4"
    if not out.is_file():
        return {}
    op, _ = shape(mp_points(out))
    h = src.n // 2
    k = min(h, src.n - h, op.size)
    real2, real1 = src.op[h : h + k], src.op[:k]
    r, r0 = pearson(op[:k], real2), pearson(real1, real2)
    return {"split_r": r, "split_r0": r0, "split": r - r0}


def _lag(row: dict[str, float]) -> float:
    return float(row.get("lag", np.nan))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", help="comma-separated substrings of clip names")
    ap.add_argument("--langs", default=",".join(DEFAULT_LANGS),
                    help=f"comma-separated, of {','.join(A.ALL_LANGS)}")
    ap.add_argument("--tag", default="", help="outputs kept apart under this tag")
    ap.add_argument("--viseme-weights", type=Path, help="dub with this viseme model")
    ap.add_argument("--split", action="store_true",
                    help="also measure bench/quality.py's split outputs (run it first)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--stills", type=Path,
                    help="write the frames around each clip's largest jump here (JPEG)")
    args = ap.parse_args()
    A.TAG = f".{args.tag}" if args.tag else ""
    if args.viseme_weights:
        from lipdub.speech.visemes import use_weights

        use_weights(str(args.viseme_weights))
    clips = [(i, c[0]) for i, c in enumerate(CLIPS)]
    if args.clips:
        keys = [k.strip() for k in args.clips.split(",") if k.strip()]
        clips = [c for c in clips if any(k in c[1] for k in keys)]
    langs = [x.strip() for x in args.langs.split(",") if x.strip()]
    t0 = time.perf_counter()
    rows: list[dict] = []
    cols = ["close", "contr", "width", "lag", "jumps", "osc", "osc_src", "speed"]
    print(f"{'clip':16s} {'speech':10s} " + " ".join(f"{c:>7s}" for c in cols))
    stills: list[np.ndarray] = []
    for idx, name in clips:
        src = SourceTrack(MEDIA / name)
        worst: dict | None = None
        for lang in langs:
            row = evaluate(src, idx, lang)
            rows.append({"clip": name, "lang": lang, **row})
            if worst is None or row["jump_share"] > worst["jump_share"]:
                worst = {"lang": lang, **row}
        if args.stills and worst is not None:
            stills.append(still(src, worst))
            print(f"{name.split('__')[-1][:16]:16s} {lang:10s} "
                  + " ".join(f"{float(row[c]):7.2f}" for c in cols), flush=True)
        if args.split:
            sp = evaluate_split(src)
            if sp:
                rows.append({"clip": name, "lang": "split", **sp})
                print(f"{name.split('__')[-1][:16]:16s} split      r {sp['split_r']:.2f} "
                      f"base {sp['split_r0']:.2f} -> {sp['split']:+.2f}", flush=True)
    print("\nmeans by speech (targets: " + ", ".join(f"{k} {v}" for k, v in TARGETS.items())
          + ")")
    summary: dict[str, dict[str, float]] = {}
    for lang in langs + (["split"] if args.split else []):
        sel = [r for r in rows if r["lang"] == lang]
        if not sel:
            continue
        keys = ["split_r", "split_r0", "split"] if lang == "split" else cols + ["jump_share"]
        m = {k: float(np.nanmean([float(r[k]) for r in sel])) for k in keys}
        if lang != "split":
            osc_n = sum(r["osc_n"] for r in sel)
            runs = sum(r["runs"] for r in sel)
            m["osc_pooled"] = osc_n / runs if runs else 0.0
            m["speed_min"] = float(np.nanmin([r["speed"] for r in sel]))
            m["speed_max"] = float(np.nanmax([r["speed"] for r in sel]))
            m["jumps_max"] = float(np.nanmax([r["jumps"] for r in sel]))
            m["lags"] = f"{min(_lag(r) for r in sel):.0f}..{max(_lag(r) for r in sel):.0f}"  # type: ignore[assignment]
        summary[lang] = m
        print(f"  {lang:10s} " + ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
    if stills:
        import cv2

        args.stills.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.stills), cv2.cvtColor(np.vstack(stills), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(f"stills: {args.stills}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1,
                                        default=float, ensure_ascii=False))


if __name__ == "__main__":
    main()

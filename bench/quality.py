"""Lip-sync quality of rendered output, measured on the output, never on the engine's intentions.

    .venv/bin/python -m bench.quality            # all 7 clips + split + speed (~15 min)
    .venv/bin/python -m bench.quality --quick    # 3 clips, no speed
    .venv/bin/python -m bench.quality --clips face_3,d20 --no-speed

Every output frame is decoded and its landmarks detected again with dlib (HOG detector +
68-point predictor), independently of the engine and of its session. The source frames get
the same treatment (cached under bench/.cache/quality), so source and output are measured
with one instrument.

Per single-person talking-head clip, the new audio is a different real speech clip, cropped
to the video's duration (``end_ms``) and inserted at 0; the original track is muted.

dub sync (frames covered by the dub, landmarks found in both source and output)
  r_dub    Pearson r between the output's mouth opening (inner-lip gap / inter-ocular
           distance) and the new audio's speech-band loudness (dB per frame)
  r_old    the output against the video's original audio: the old motion must be gone
  lag      lag L in +-10 frames maximising r(open[k], loud[k - L]); positive = the mouth is
           behind the sound
  src      reference: the source mouth with its own audio (r, lag) and with the new audio
           (no lip-sync, about 0)
split reconstruction
  The first half of the clip (its own first-half audio kept, so the engine can calibrate)
  is driven by the audio of the second half. r and mean absolute error of the output's
  opening against the real second-half opening, next to the baseline of the untouched first
  half against the second half. Target: r - baseline r >= 0.15.
fidelity
  mask     lower-face polygon from the source landmarks of each frame (jaw 2..14 + nose
           base 31..35), dilated by 15 % of the face width (jaw 0 to 16)
  psnr     PSNR (RGB, pooled MSE over all frames) outside the mask, source vs output
  psnr0    the same for the source merely re-encoded with the engine's own x264 settings
           (media.video.DEFAULT_*): the encoding-loss floor; psnr well under psnr0 = the
           engine leaks
  seam     mean | |grad out| - |grad src| | (luma Sobel magnitude, 0..255 levels) in a band
           of +-2 % face width around the mask border, and the ratio of that to the same
           measure further out (dist > 2x band, the encoding-noise floor): ~1 = no seam
naturalness (next to the same person's real mouth in the source, on speaking frames)
  speed    mean |d opening| per frame, output / source while speaking
  range    95th-percentile opening, output / source while speaking
  snaps    share of output frames whose |d opening| exceeds the source's 99th percentile,
           over the source's own share (target <= 2)
speed
  bench/_clips.talking_head(720) and (1080), 15 s, one face: sync wall time over video
  duration (RTF), identify apart, in a fresh process each for peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.io import wavfile

import lipdub
from bench._clips import talking_head
from bench._landmarks import Detector, frames
from bench._landmarks import source_landmarks as _source_landmarks
from bench.common import (
    CACHE,
    CLIPS,
    MEDIA,
    QUICK,
    best_lag,
    lag_r,
    naturalness,
    pearson,
    speaking,
)
from lipdub.faces.geometry import mouth_opening
from lipdub.media.audio import decode_audio, read_video_audio, to_mono
from lipdub.media.video import VideoWriter, iter_frames, probe
from lipdub.speech.features import speech_loudness

SR = 16000
OUT = CACHE / "quality"

TARGETS = {
    "r_dub": "≥0.5",
    "d_old": "≥0.4",
    "lag": "-1..2 all",
    "split": "≥+0.15",
    "psnr": "≥40",
    "speed": "0.8-1.2",
    "range": "0.8-1.2",
    "snaps": "≤2",
    "rtf720": "≤1.0",
    "rtf1080": "≤1.5",
}


def source_landmarks(video: Path) -> np.ndarray:
    return _source_landmarks(video, OUT)


# ---------------------------------------------------------------------------- measures


@dataclass
class Fidelity:
    sse: float = 0.0
    n: int = 0
    seam: float = 0.0
    seam_n: int = 0
    floor: float = 0.0
    floor_n: int = 0

    def add(self, src: np.ndarray, out: np.ndarray, lm: np.ndarray) -> None:
        if not np.isfinite(lm).all() or src.shape != out.shape:
            return
        h, w = src.shape[:2]
        poly = np.concatenate([lm[2:15], lm[35:30:-1]]).round().astype(np.int32)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [poly], 255)
        fw = float(np.linalg.norm(lm[16] - lm[0]))
        dist = cv2.distanceTransform(255 - mask, cv2.DIST_L2, 3)
        d = 0.15 * fw
        bw = max(2.0, 0.02 * fw)
        outside = dist > d
        diff = src.astype(np.float32) - out.astype(np.float32)
        self.sse += float((diff[outside] ** 2).sum())
        self.n += int(outside.sum()) * 3
        gs = _grad(src)
        go = _grad(out)
        gd = np.abs(go - gs)
        band = np.abs(dist - d) <= bw
        far = dist > d + 2 * bw
        self.seam += float(gd[band].sum())
        self.seam_n += int(band.sum())
        self.floor += float(gd[far].sum())
        self.floor_n += int(far.sum())

    @property
    def psnr(self) -> float:
        mse = self.sse / max(self.n, 1)
        return float("inf") if mse <= 0 else 10 * np.log10(255.0**2 / mse)

    @property
    def seam_level(self) -> float:
        return self.seam / max(self.seam_n, 1)

    @property
    def seam_ratio(self) -> float:
        return self.seam_level / max(self.floor / max(self.floor_n, 1), 1e-6)


def _grad(rgb: np.ndarray) -> np.ndarray:
    y = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1))


def measure_output(
    source: Path, output: Path, src_lm: np.ndarray
) -> tuple[np.ndarray, Fidelity, int]:
    """Landmarks detected on every output frame, and fidelity against the source frames."""
    det = Detector()
    fid = Fidelity()
    rows = []
    for i, (s, o) in enumerate(zip(frames(source), frames(output), strict=False)):
        rows.append(det(o))
        if i < src_lm.shape[0]:
            fid.add(s, o, src_lm[i])
    return np.stack(rows), fid, det.misses


# ---------------------------------------------------------------------------- media helpers


def reencode(video: Path, dst: Path) -> None:
    """The source re-encoded alone with the engine's own writer and settings: the
    encoding-loss reference for the PSNR outside the mask."""
    info = probe(video)
    with VideoWriter(dst, info.width, info.height, info.fps) as out:
        for fr in iter_frames(video):
            out.write(fr.rgb)


def encoding_psnr(video: Path, src_lm: np.ndarray, tmp: Path) -> float:
    ref = tmp / f"{video.stem}.reenc.mp4"
    reencode(video, ref)
    fid = Fidelity()
    for i, (s, o) in enumerate(zip(frames(video), frames(ref), strict=False)):
        if i < src_lm.shape[0]:
            fid.add(s, o, src_lm[i])
    return fid.psnr


def write_wav(path: Path, x: np.ndarray, sr: int) -> None:
    wavfile.write(str(path), sr, (np.clip(x, -1, 1) * 32767).astype(np.int16))


def cut_first_half(video: Path, n_half: int, fps: float, dst: Path) -> None:
    """First ``n_half`` frames re-encoded (x264 crf 16) with the matching audio."""
    pcm = read_video_audio(video, 48000, 2)
    audio = None if pcm is None else pcm[: int(round(n_half / fps * 48000))]
    info = probe(video)
    with VideoWriter(dst, info.width, info.height, fps, audio=audio, sample_rate=48000,
                     crf=16) as out:
        for fr in iter_frames(video):
            if fr.index >= n_half:
                break
            out.write(fr.rgb)


def run_sync(video: Path, audio: Path, out: Path, end_ms: float) -> tuple[float, float]:
    """identify + sync; the dub is cropped to ``end_ms`` (or the audio's own end)."""
    end_ms = min(end_ms, np.floor(decode_audio(audio, SR, 1).shape[0] / SR * 1000) - 1)
    t0 = time.perf_counter()
    s = lipdub.identify(video)
    t1 = time.perf_counter()
    lipdub.sync(
        video,
        [lipdub.FaceAudio(s.faces[0].face_id, audio, end_ms=float(end_ms))],
        out_path=out,
        session=s,
        original_volume=0.0,
    )
    return t1 - t0, time.perf_counter() - t1


# ---------------------------------------------------------------------------- per clip


def evaluate(name: str, dub_name: str, tmp: Path, split: bool) -> dict[str, float]:
    video, dub_path = MEDIA / name, MEDIA / dub_name
    with av.open(str(video)) as c:
        fps = float(c.streams.video[0].average_rate)  # type: ignore[arg-type]
    src_lm = source_landmarks(video)
    n = src_lm.shape[0]
    dur_ms = n / fps * 1000
    src_open = mouth_opening(src_lm)
    own = read_video_audio(video, SR, 1)
    assert own is not None
    own_m = to_mono(own)
    dub_m = to_mono(decode_audio(dub_path, SR, 1))[: int(round(dur_ms / 1000 * SR))]
    loud_old = speech_loudness(own_m, SR, fps, n)
    loud_new = speech_loudness(dub_m, SR, fps, n)
    covered = np.arange(n) < int(dub_m.size / SR * fps)  # frames the dub spans

    out = OUT / f"{video.stem}.dub.mp4"
    t_id, t_sync = run_sync(video, dub_path, out, dur_ms)
    out_lm, fid, misses = measure_output(video, out, src_lm)
    m = min(n, out_lm.shape[0])
    out_open = np.full(n, np.nan)
    out_open[:m] = mouth_opening(out_lm[:m])
    sel = covered & np.isfinite(src_open) & np.isfinite(out_open)
    o, ln, lo, so = out_open[sel], loud_new[sel], loud_old[sel], src_open[sel]
    sp = speaking(loud_old)
    speed, rng, snaps = naturalness(o, src_open, sp)
    row = {
        "r_dub": pearson(o, ln),
        "r_old": pearson(o, lo),
        "lag": best_lag(o, ln),
        "r_src": pearson(so, lo),
        "lag_src": best_lag(so, lo),
        "r_src_new": pearson(so, ln),
        "psnr": fid.psnr,
        "seam": fid.seam_level,
        "seam_x": fid.seam_ratio,
        "speed": speed,
        "range": rng,
        "snaps": snaps,
        "frames": float(n),
        "out_frames": float(out_lm.shape[0]),
        "misses": float(misses),
        "t_identify": t_id,
        "t_sync": t_sync,
        "dur": dur_ms / 1000,
    }
    row["d_old"] = row["r_dub"] - row["r_old"]
    row["r_lag"] = lag_r(o, ln, int(row["lag"]))
    row["psnr0"] = encoding_psnr(video, src_lm, tmp)
    np.savez(  # per-frame curves, for plots when tuning
        OUT / f"{video.stem}.curves.npz",
        out_open=out_open,
        src_open=src_open,
        loud_new=loud_new,
        loud_old=loud_old,
        covered=covered,
        speaking=sp,
    )
    if split:
        row.update(split_reconstruction(video, src_lm, src_open, own, fps, tmp))
    return row


def split_reconstruction(
    video: Path, src_lm: np.ndarray, src_open: np.ndarray, own: np.ndarray, fps: float, tmp: Path
) -> dict[str, float]:
    n = src_lm.shape[0]
    h = n // 2
    k = min(h, n - h)
    half = tmp / f"{video.stem}.first.mp4"
    cut_first_half(video, h, fps, half)
    second = to_mono(own)[int(round(h / fps * SR)) :]
    wav = tmp / f"{video.stem}.second.wav"
    write_wav(wav, second, SR)
    out = OUT / f"{video.stem}.split.mp4"
    run_sync(half, wav, out, k / fps * 1000)
    out_lm, _, _ = measure_output(half, out, src_lm[:h])
    o = np.full(k, np.nan)
    kk = min(k, out_lm.shape[0])
    o[:kk] = mouth_opening(out_lm[:kk])
    real2, real1 = src_open[h : h + k], src_open[:k]
    r, r0 = pearson(o, real2), pearson(real1, real2)
    ok, ok0 = np.isfinite(o) & np.isfinite(real2), np.isfinite(real1) & np.isfinite(real2)
    return {
        "split_r": r,
        "split_r0": r0,
        "split": r - r0,
        "split_mae": float(np.abs(o - real2)[ok].mean()),
        "split_mae0": float(np.abs(real1 - real2)[ok0].mean()),
    }


# ---------------------------------------------------------------------------- speed

CHILD = r"""
import json, resource, sys, time
from lipdub.faces import models
models.preload()
import lipdub
video, audio, out = sys.argv[1:4]
t0 = time.perf_counter()
s = lipdub.identify(video)
t1 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
c1 = ru.ru_utime + ru.ru_stime
lipdub.sync(video, [lipdub.FaceAudio(s.faces[0].face_id, audio, end_ms=s.video.duration_ms)],
            out_path=out, session=s, original_volume=0.0)
t2 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"identify": t1 - t0, "sync": t2 - t1, "cpu": ru.ru_utime + ru.ru_stime - c1,
                  "dur": s.video.duration_ms / 1000,
                  "w": s.video.width, "h": s.video.height,
                  # VmHWM: ru_maxrss would carry the forking bench's RSS across exec
                  "rss_mb": next(int(x.split()[1]) for x in open("/proc/self/status")
                                 if x.startswith("VmHWM")) / 1024}))
"""


def measure_speed(height: int) -> dict[str, float]:
    clip = talking_head(height)
    out = OUT / f"speed_{height}p.mp4"
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(clip), str(MEDIA / "musetalk__eng.wav"), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- report


def nanmean(v: list[float]) -> float:
    a = np.asarray(v, float)
    return float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else float("nan")


def engine_version() -> str:
    """The commit the engine was measured at, and whether its sources had local edits."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src/lipdub/render", "src/lipdub/speech",
             "src/lipdub/faces", "src/lipdub/media"],
            cwd=root, capture_output=True, text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + (" + local edits in the engine" if dirty else "")


def fmt(v: float, spec: str = "6.2f") -> str:
    return f"{v:{spec}}" if np.isfinite(v) else f"{'-':>{spec.split('.')[0]}}"


COLS = [
    ("r_dub", "r_dub", "6.2f"),
    ("r_old", "r_old", "6.2f"),
    ("d_old", "Δold", "6.2f"),
    ("lag", "lag", "4.0f"),
    ("r_lag", "r@lag", "6.2f"),
    ("r_src", "r_src", "6.2f"),
    ("lag_src", "lagS", "4.0f"),
    ("r_src_new", "r_sNw", "6.2f"),
    ("split_r", "spl_r", "6.2f"),
    ("split_r0", "base", "6.2f"),
    ("split", "Δsplit", "6.2f"),
    ("split_mae", "mae", "6.3f"),
    ("split_mae0", "mae0", "6.3f"),
    ("psnr", "psnr", "5.1f"),
    ("psnr0", "psnr0", "5.1f"),
    ("seam", "seam", "5.1f"),
    ("seam_x", "seamX", "5.2f"),
    ("speed", "speed", "6.2f"),
    ("range", "range", "6.2f"),
    ("snaps", "snaps", "6.2f"),
]


def check(key: str, v: float, rows: list[dict[str, float]] | None = None) -> str:
    if not np.isfinite(v):
        return "-"
    ok = {
        "r_dub": v >= 0.5,
        "d_old": v >= 0.4,
        "split": v >= 0.15,
        "psnr": v >= 40.0,
        "speed": 0.8 <= v <= 1.2,
        "range": 0.8 <= v <= 1.2,
        "snaps": v <= 2.0,
        "rtf720": v <= 1.0,
        "rtf1080": v <= 1.5,
    }.get(key)
    if key == "lag" and rows is not None:
        ok = all(-1 <= r["lag"] <= 2 for r in rows)
    return "PASS" if ok else "FAIL"


def report(
    rows: list[tuple[str, dict[str, float]]], speed: list[tuple[int, dict[str, float]]]
) -> None:
    checks: list[tuple[str, str, float]] = []
    vals = [r for _, r in rows]
    lags = [int(r["lag"]) for r in vals]
    if rows:
        mean = table(rows)
        checks = [
            ("r_dub", "r_dub", mean["r_dub"]),
            ("d_old", "r_dub - r_dub_old", mean["d_old"]),
            ("lag", "best lag, every clip", float("nan")),
            ("split", "split r - baseline r", mean["split"]),
            ("psnr", "PSNR outside mask dB", mean["psnr"]),
            ("speed", "speed ratio", mean["speed"]),
            ("range", "range ratio", mean["range"]),
            ("snaps", "snaps / source's", mean["snaps"]),
        ]
    for h, s in speed:
        checks.append((f"rtf{h}", f"RTF sync {h}p", s["sync"] / s["dur"]))
    print()
    print(f"{'target (means)':26} {'value':>9} {'target':>10}  result")
    for key, label, v in checks:
        shown = f"{min(lags)}..{max(lags)}" if key == "lag" else fmt(v, "9.2f")
        res = check(key, 1.0, vals) if key == "lag" else check(key, v)
        print(f"{label:26} {shown:>9} {TARGETS[key]:>10}  {res}")
    if speed:
        print()
        print(
            f"{'speed clip':22} {'size':>10} {'dur s':>6} {'sync s':>7} {'RTF':>5} "
            f"{'cpu s':>6} {'identify s':>10} {'id RTF':>6} {'peak MB':>8}"
        )
        for h, s in speed:
            print(
                f"{f'talking head {h}p':22} {int(s['w'])}x{int(s['h']):<5} {s['dur']:6.1f}"
                f" {s['sync']:7.1f} {s['sync'] / s['dur']:5.2f} {s.get('cpu', np.nan):6.1f}"
                f" {s['identify']:10.1f} {s['identify'] / s['dur']:6.2f} {s['rss_mb']:8.0f}"
            )
    if rows:
        print()
        print("per clip: frames (output frames), detector misses on output, identify/sync s")
        for name, r in rows:
            print(
                f"  {name:34} {int(r['frames'])} ({int(r['out_frames'])})"
                f" miss {int(r['misses'])}  identify {r['t_identify']:.1f}"
                f"  sync {r['t_sync']:.1f}  RTF {r['t_sync'] / r['dur']:.2f}"
            )


def table(rows: list[tuple[str, dict[str, float]]]) -> dict[str, float]:
    head = f"{'clip':22} {'dub':14}" + "".join(
        f" {lab:>{int(spec.split('.')[0])}}" for _, lab, spec in COLS
    )
    print()
    print(head)
    print("-" * len(head))
    for name, r in rows:
        print(
            f"{name.split('.')[0][-22:]:22} {str(r['dub'])[:14]:14}"
            + "".join(f" {fmt(r.get(k, np.nan), spec)}" for k, _, spec in COLS)
        )
    print("-" * len(head))
    vals = [r for _, r in rows]
    mean = {k: nanmean([r.get(k, np.nan) for r in vals]) for k, _, _ in COLS}
    line = f"{'MEAN':22} {'':14}"
    for k, _, spec in COLS:
        if k in ("lag", "lag_src"):
            lags = [int(r[k]) for r in vals]
            line += f" {f'{min(lags)}..{max(lags)}':>{int(spec.split('.')[0])}}"
        else:
            line += f" {fmt(mean[k], spec)}"
    print(line)
    return mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 clips, no speed")
    ap.add_argument("--clips", help="comma-separated substrings of clip names")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-split", action="store_true")
    ap.add_argument("--only-speed", action="store_true", help="the speed rows alone")
    args = ap.parse_args()

    clips = CLIPS
    if args.quick:
        clips = [c for c in CLIPS if c[0] in QUICK]
    if args.clips:
        keys = [k.strip() for k in args.clips.split(",") if k.strip()]
        clips = [c for c in clips if any(k in c[0] for k in keys)]
    if args.only_speed:
        clips = []
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"engine at {engine_version()}")
    t0 = time.perf_counter()
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as td:
        for name, dub in clips:
            print(f"[{time.perf_counter() - t0:6.0f}s] {name} <- {dub}", flush=True)
            r = evaluate(name, dub, Path(td), split=not args.no_split)
            r["dub"] = dub.split("__")[-1].rsplit(".", 1)[0]  # type: ignore[assignment]
            rows.append((name, r))
    speed: list[tuple[int, dict[str, float]]] = []
    if not (args.quick or args.no_speed):
        for h in (720, 1080):
            print(f"[{time.perf_counter() - t0:6.0f}s] speed {h}p", flush=True)
            speed.append((h, measure_speed(h)))
    report(rows, speed)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

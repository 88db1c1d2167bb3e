"""Judge mouth targets without rendering: the tuning loop for lipdub.speech.mouth.

For each single-person clip in the shared media folder: landmarks (dlib HOG + 68-point
predictor, cached as .npy), the person's profile from the clip's own audio, then targets
driven by new speech in several languages (and singing), scored the way the final
benchmark scores rendered output:

  r_dub    Pearson r per frame, target opening vs the NEW audio's speech_loudness
  r_old    same against the video's original audio (should stay near 0)
  lag      best lag in +-10 frames (positive = mouth behind the sound); want -1..+2
  speed    mean |d opening| / the source's real speaking mouth; want 0.8..1.2
  range    95th-percentile opening / source's; want 0.8..1.2
  snaps    share of |d| over the source's 99th percentile / the source's share; want <= 2
  split    profile + calibration from the first half (own audio), targets from the second
           half's audio, r vs the real second-half opening, minus the baseline r of the
           untouched first half; want >= 0.15

Usage: python bench/mouth_curve.py [--cache /tmp/lipdub_lm] [--media ../shared/media]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np

from lipdub.faces.geometry import mouth_opening
from lipdub.media.audio import decode_audio, read_video_audio, to_mono
from lipdub.speech.calibration import Calibration  # noqa: E402
from lipdub.speech.features import speech_loudness
from lipdub.speech.mouth import build_profile, mouth_targets

SR = 16000
CLIPS = [
    "videoretalking__face_2.mp4",
    "videoretalking__face_3.mp4",
    "videoretalking__face_4.mp4",
    "videoretalking__face_5.mp4",
    "sadtalker__WDA_KatieHill_000.mp4",
    "infinitetalk__ref_video.mp4",
    "liveportrait__d20.mp4",
]
DUBS = {
    "en": "sadtalker__RD_Radio31_000.wav",
    "en2": "videoretalking__audio_1.wav",
    "zh": "sadtalker__chinese_news.wav",
    "zh2": "musetalk__sun.wav",
    "de": "sadtalker__deyu.wav",
    "ja": "sadtalker__japanese.wav",
    "ru": "sadtalker__eluosi.wav",
    "sing": "infinitetalk__1.wav",
}


FRENCH = (
    "Bonjour à tous. Aujourd'hui nous allons parler du budget de la ville, des écoles et "
    "des transports, puis nous répondrons à vos questions sur le nouveau quartier."
)


def french_speech(cache: Path) -> np.ndarray | None:
    """No French recording is in the media set: synthesise one with espeak-ng if present."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    wav = cache / "fr_espeak.wav"
    if not wav.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([exe, "-v", "fr", "-s", "160", "-w", str(wav), FRENCH], check=True)
    return to_mono(decode_audio(wav, SR, 1))


def landmarks_for(video: Path, cache: Path) -> np.ndarray:
    out = cache / (video.name + ".npy")
    if out.is_file():
        return np.load(out)
    import dlib  # only when the cache is cold

    root = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0])  # type: ignore[union-attr, index]
    pred = dlib.shape_predictor(str(root / "models/shape_predictor_68_face_landmarks.dat"))
    det = dlib.get_frontal_face_detector()
    rows, prev = [], None
    with av.open(str(video)) as c:
        for fr in c.decode(c.streams.video[0]):
            img = fr.to_ndarray(format="rgb24")
            dets = det(img, 0)
            if len(dets):
                prev = max(dets, key=lambda r: r.area())
            if prev is None:
                rows.append(np.full((68, 2), np.nan, np.float32))
                continue
            sh = pred(img, prev)
            rows.append(np.array([[p.x, p.y] for p in sh.parts()], np.float32))
    arr = np.stack(rows)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(out, arr)
    return arr


def identify_landmarks(video: Path, cache: Path) -> np.ndarray:
    """Landmarks of the most prominent face from lipdub's own identify() (smoothed), with
    NaN rows where that face is not tracked."""
    out = cache / (video.name + ".identify.npy")
    if out.is_file():
        return np.load(out)
    from lipdub.faces.identify import identify

    session = identify(video)
    face = session.faces[0]
    n = session.video.frame_count
    arr = np.full((n, 68, 2), np.nan, np.float32)
    arr[face.track.frames] = face.track.landmarks
    cache.mkdir(parents=True, exist_ok=True)
    np.save(out, arr)
    return arr


def fps_of(video: Path) -> float:
    with av.open(str(video)) as c:
        return float(c.streams.video[0].average_rate)  # type: ignore[arg-type]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    m = np.isfinite(a) & np.isfinite(b)
    if m.sum() < 3 or np.std(a[m]) < 1e-12 or np.std(b[m]) < 1e-12:
        return 0.0
    return float(np.corrcoef(a[m], b[m])[0, 1])


def best_lag(opening: np.ndarray, loud: np.ndarray, max_lag: int = 10) -> int:
    """Lag L maximising r(open[k], loud[k - L]); positive L = the mouth is behind."""
    best, arg = -2.0, 0
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            r = pearson(opening[lag:], loud[: loud.size - lag])
        else:
            r = pearson(opening[:lag], loud[-lag:])
        if r > best:
            best, arg = r, lag
    return arg


def fit_audio(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or repeat to ``n`` samples (the dub placed at 0 on the video timeline).

    Repeating rather than zero-padding keeps short dubs from turning a long clip into
    mostly silence, which would judge the pause posture instead of the speech.
    """
    if x.size >= n:
        return x[:n]
    return np.resize(x, n)


def naturalness(out: np.ndarray, src: np.ndarray, src_speaking: np.ndarray) -> tuple[float, ...]:
    d_all = np.abs(np.diff(src))
    ok = np.isfinite(d_all)
    d_src = d_all[ok]
    sp = src_speaking[1:] & src_speaking[:-1] & ok
    d_sp = d_all[sp] if sp.sum() > 5 else d_src
    d_out = np.abs(np.diff(out))
    speed = d_out.mean() / max(d_sp.mean(), 1e-9)
    rng = np.percentile(out, 95) / max(np.nanpercentile(src[src_speaking], 95), 1e-9)
    p99 = np.percentile(d_src, 99)
    snap_src = max(float((d_src > p99).mean()), 1e-3)
    snaps = float((d_out > p99).mean()) / snap_src
    return float(speed), float(rng), snaps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lipdub_lm"))
    ap.add_argument(
        "--media", type=Path, default=Path(__file__).resolve().parents[2] / "shared/media"
    )
    ap.add_argument("--no-calibration", action="store_true")
    ap.add_argument(
        "--identify", action="store_true", help="landmarks from lipdub identify(), not raw dlib"
    )
    args = ap.parse_args()
    calibrate = not args.no_calibration

    dubs = {k: to_mono(decode_audio(args.media / v, SR, 1)) for k, v in DUBS.items()}
    fr = french_speech(args.cache)
    if fr is not None:
        dubs["fr"] = fr
    else:
        print("(no espeak-ng: French skipped)")
    head = (
        f"{'clip':26s} {'r_dub':>6s} {'min':>5s} {'r_old':>6s} {'lag':>6s} {'speed':>6s}"
        f" {'range':>6s} {'snaps':>6s} {'split':>6s} {'sing r':>6s} {'cal o/w':>11s}"
    )
    print("per clip: mean over the speech dubs (" + ", ".join(k for k in dubs if k != "sing") + ")")
    print(head)
    clip_rows = []
    per_lang: dict[str, list[tuple[float, int, float, float, float]]] = {}
    for name in CLIPS:
        video = args.media / name
        lm = (
            identify_landmarks(video, args.cache)
            if args.identify
            else landmarks_for(video, args.cache)
        )
        fps = fps_of(video)
        n = lm.shape[0]
        src = read_video_audio(video, SR, 1)
        assert src is not None
        src_m = fit_audio(to_mono(src), int(round(n / fps * SR)))
        seen = np.flatnonzero(np.isfinite(lm).all(axis=(1, 2)))
        prof = build_profile(lm[seen], fps, src_m, SR, frames=seen, calibrate=calibrate)
        real = mouth_opening(lm)
        loud_old = speech_loudness(src_m, SR, fps, n)
        from lipdub.speech.cues import activity  # bench-only peek at the speech mask

        src_speaking = activity(loud_old) > 0.5
        if src_speaking.sum() < 20:
            src_speaking = np.ones(n, bool)

        # Split reconstruction: learn on the first half, drive with the second half's audio.
        h = n // 2
        sa = seen[seen < h]
        prof_a = build_profile(
            lm[sa], fps, src_m[: int(h / fps * SR)], SR, frames=sa, calibrate=calibrate
        )
        m = n - h
        second = src_m[int(round(h / fps * SR)) :]
        tgt_b = mouth_targets(second, SR, fps, m, prof_a)
        k = min(h, m)
        split = pearson(tgt_b.open, real[h:]) - pearson(real[:k], real[h : h + k])

        def cal_str(cal: Calibration | None) -> str:
            return "-" if cal is None or cal.weight == 0 else f"{cal.weight:.2f}"

        cal_s = f"{cal_str(prof.open_cal)}/{cal_str(prof.width_cal)}"
        rows = []
        sing_r = float("nan")
        for lang, audio in dubs.items():
            dub = fit_audio(audio, src_m.size)
            t = mouth_targets(dub, SR, fps, n, prof)
            loud_new = speech_loudness(dub, SR, fps, n)
            r_dub = pearson(t.open, loud_new)
            r_old = pearson(t.open, loud_old)
            lag = best_lag(t.open, loud_new)
            speed, rng, snaps = naturalness(t.open, real, src_speaking)
            per_lang.setdefault(lang, []).append((r_dub, lag, speed, rng, snaps))
            if lang == "sing":
                sing_r = r_dub
            else:
                rows.append((r_dub, r_old, lag, speed, rng, snaps))
        a = np.array(rows)
        clip_rows.append((a[:, 0].mean(), a[:, 1].mean(), a[:, 3].mean(), a[:, 4].mean(), split))
        lags = f"{int(a[:, 2].min())}..{int(a[:, 2].max())}"
        print(
            f"{name[:26]:26s} {a[:, 0].mean():6.2f} {a[:, 0].min():5.2f} {a[:, 1].mean():6.2f}"
            f" {lags:>6s} {a[:, 3].mean():6.2f} {a[:, 4].mean():6.2f} {a[:, 5].max():6.2f}"
            f" {split:6.2f} {sing_r:6.2f} {cal_s:>11s}"
        )
    c = np.array(clip_rows)
    print("-" * len(head))
    print(
        f"{'MEAN over clips':26s} {c[:, 0].mean():6.2f} {'':5s} {c[:, 1].mean():6.2f} {'':6s}"
        f" {c[:, 2].mean():6.2f} {c[:, 3].mean():6.2f} {'':6s} {c[:, 4].mean():6.2f}"
    )
    print("per dub language: mean over clips")
    for lang, vals in per_lang.items():
        v = np.array(vals)
        print(
            f"  {lang:5s} r_dub {v[:, 0].mean():.2f} (min {v[:, 0].min():.2f})"
            f" lag {int(v[:, 1].min())}..{int(v[:, 1].max())} speed {v[:, 2].mean():.2f}"
            f" ({v[:, 2].min():.2f}-{v[:, 2].max():.2f}) range {v[:, 3].mean():.2f}"
            f" ({v[:, 3].min():.2f}-{v[:, 3].max():.2f}) snaps max {v[:, 4].max():.2f}"
        )


if __name__ == "__main__":
    main()

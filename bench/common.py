"""What the benchmarks share: where the media and the cache are, the quality clip list,
the measures of a mouth curve against speech, and measuring in a child process.

One copy of each measure, so two benches cannot report different figures for the same
curve (``pearson`` used to answer NaN in quality.py and 0.0 in mouth_curve.py for a flat
curve; NaN is kept: a flat curve has no correlation, and ``best_lag`` skips it).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from lipdub.speech.features import SILENCE_DB

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
CACHE = REPO / "bench" / ".cache"
MAX_LAG = 10

# (video, new audio): every video gets a different real speech clip at least as long as it
# (bench/quality.py, and bench/articulation.py's source faces).
CLIPS = [
    ("videoretalking__face_2.mp4", "videoretalking__audio_1.wav"),
    ("videoretalking__face_3.mp4", "sadtalker__RD_Radio31_000.wav"),
    ("videoretalking__face_4.mp4", "sadtalker__deyu.wav"),
    ("videoretalking__face_5.mp4", "sadtalker__chinese_news.wav"),
    ("sadtalker__WDA_KatieHill_000.mp4", "sadtalker__japanese.wav"),
    ("infinitetalk__ref_video.mp4", "musetalk__eng.wav"),
    ("liveportrait__d20.mp4", "musetalk__sun.wav"),
]
QUICK = ["videoretalking__face_3.mp4", "videoretalking__face_5.mp4", "liveportrait__d20.mp4"]


# ---------------------------------------------------------------------------- measures


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    m = np.isfinite(a) & np.isfinite(b)
    if m.sum() < 3 or np.std(a[m]) < 1e-12 or np.std(b[m]) < 1e-12:
        return float("nan")
    return float(np.corrcoef(a[m], b[m])[0, 1])


def lag_r(opening: np.ndarray, loud: np.ndarray, lag: int) -> float:
    """r(open[k], loud[k - lag])."""
    if lag >= 0:
        return pearson(opening[lag:], loud[: loud.size - lag])
    return pearson(opening[:lag], loud[-lag:])


def best_lag(opening: np.ndarray, loud: np.ndarray, max_lag: int = MAX_LAG) -> int:
    """Lag L maximising r(open[k], loud[k - L]); positive L = the mouth is behind."""
    best, arg = -2.0, 0
    for lag in range(-max_lag, max_lag + 1):
        r = lag_r(opening, loud, lag)
        if np.isfinite(r) and r > best:
            best, arg = r, lag
    return arg


def speaking(loud: np.ndarray) -> np.ndarray:
    """Frames where the source speaks: above a threshold between the clip's own noise floor
    and speech peaks (same rule as the engine's activity gate, re-implemented here)."""
    live = loud > SILENCE_DB + 1
    if live.sum() < 20:
        return np.ones(loud.size, bool)
    ref, floor = np.percentile(loud[live], 95), np.percentile(loud[live], 5)
    thr = max(min(max(floor + 0.4 * (ref - floor), ref - 30.0), ref - 6.0), -72.0)
    sp = live & (loud > thr)
    return sp if sp.sum() >= 20 else np.ones(loud.size, bool)


def naturalness(out: np.ndarray, src: np.ndarray, src_sp: np.ndarray) -> tuple[float, ...]:
    """(speed, range, snaps) of the ``out`` opening curve next to the same person's real
    mouth ``src`` on the frames ``src_sp`` where they speak."""
    d_src_all = np.abs(np.diff(src))
    ok = np.isfinite(d_src_all)
    sp = src_sp[1:] & src_sp[:-1] & ok
    d_sp = d_src_all[sp] if sp.sum() > 5 else d_src_all[ok]
    d_out = np.abs(np.diff(out))
    d_out = d_out[np.isfinite(d_out)]
    speed = d_out.mean() / max(d_sp.mean(), 1e-9)
    src_open = src[src_sp & np.isfinite(src)]
    rng = np.nanpercentile(out, 95) / max(np.percentile(src_open, 95), 1e-9)
    p99 = np.percentile(d_src_all[ok], 99)
    snap_src = max(float((d_src_all[ok] > p99).mean()), 1e-3)
    snaps = float((d_out > p99).mean()) / snap_src
    return float(speed), float(rng), snaps


def fps_of(video: Path) -> float:
    with av.open(str(video)) as c:
        return float(c.streams.video[0].average_rate)  # type: ignore[arg-type]


# ------------------------------------------------------------------- child processes


def cpu() -> float:
    """CPU seconds (user + system) this process has used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_child(
    code: str, args: Sequence[str], env: Mapping[str, str] | None = None, what: str = "child"
) -> dict[str, Any]:
    """Run ``python -c code *args`` (a fresh process: its own peak RSS, nothing imported
    before the clock starts) and return the JSON object on its last stdout line."""
    res = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True,
        env=dict(env) if env is not None else None,
    )
    if res.returncode != 0:
        raise SystemExit(f"{what} failed:\n{res.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out

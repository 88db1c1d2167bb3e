"""Where identify's and sync's CPU goes: per thread, and per step of sync's main thread.

    .venv/bin/python -m bench.sync_profile              # 720p 60 s, one face
    .venv/bin/python -m bench.sync_profile 1080 60

The clip is bench/_clips.speed_clip (the one bench/speed.py uses); identify runs first
(models loaded before), then one sync, in this process, under the service's allocator
settings. Printed:

* wall and CPU of each, and the cores it used on average (CPU / wall);
* CPU seconds per thread, read from /proc while it runs (Python threads by name; the
  threads FFmpeg and x264 start have no Python name: h264 frame threads are named by
  FFmpeg, x264's workers show as "python");
* the main thread's own CPU (thread_time) per call of each render step, in ms, and the
  wall time it spent waiting to hand frames to the encoder's queue.
"""

from __future__ import annotations

import collections
import functools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._clips import MEDIA, speed_clip
from lipdub.media.memory import tune_allocator

tune_allocator()

import lipdub  # noqa: E402 (after tune_allocator)
from lipdub.faces import models  # noqa: E402 (after tune_allocator)
from lipdub.media import yuv  # noqa: E402 (after tune_allocator)
from lipdub.render import compose, engine  # noqa: E402 (after tune_allocator)

CPU: dict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter[str] = collections.Counter()
WAIT = [0.0]


def _timed(owner: Any, name: str, label: str) -> None:
    """Count ``owner.name``'s main-thread CPU under ``label`` (nested steps count in both)."""
    f: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(f)
    def g(*a: Any, **k: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return f(*a, **k)
        t = time.thread_time()
        try:
            return f(*a, **k)
        finally:
            CPU[label] += time.thread_time() - t
            CALLS[label] += 1

    setattr(owner, name, g)


def _waited(owner: Any, name: str) -> None:
    """Wall minus CPU of ``owner.name`` on the main thread: time blocked on a full queue."""
    f: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(f)
    def g(*a: Any, **k: Any) -> Any:
        w, c = time.perf_counter(), time.thread_time()
        try:
            return f(*a, **k)
        finally:
            WAIT[0] += (time.perf_counter() - w) - (time.thread_time() - c)

    setattr(owner, name, g)


STEPS = [
    (engine._Guarded, "render", "guarded render (all below but write-back)"),
    (compose.Compositor, "render", "  compositor"),
    (compose, "lower_face_mask", "    mask"),
    (compose, "sharpen_amount", "    sharpness solve"),
    (compose, "close_and_narrow", "    close / narrow"),
    (engine, "check_patch", "  patch check"),
    (engine, "landmark_jumps", "  landmark jump (frames not measured ahead)"),
    (yuv.YuvPicture, "rgb", "window to RGB"),
    (yuv.YuvPicture, "put", "write-back"),
    (yuv.YuvPicture, "_writable", "  planes made writable (copied if referenced)"),
]


class ThreadCPU:
    """CPU seconds per thread while the block runs, read from /proc (threads that were
    alive before count from where they were)."""

    def __init__(self) -> None:
        self.threads: dict[str, tuple[str, float]] = {}
        self._start: dict[str, float] = {}
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ThreadCPU:
        self._read(first=True)
        self._poller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._poller.join()
        self._read()

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            self._read()

    def _read(self, first: bool = False) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        names = {str(t.native_id): t.name for t in threading.enumerate()}
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
                comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            except OSError:
                continue
            f = stat.rsplit(")", 1)[1].split()
            used = (int(f[11]) + int(f[12])) / tick
            self._start.setdefault(tid, used if first else 0.0)
            known = self.threads.get(tid, ("", 0.0))[0]
            name = names.get(tid) or (known if known not in ("", "python") else comm)
            self.threads[tid] = (name, used - self._start[tid])

    def report(self) -> None:
        per: dict[str, float] = collections.defaultdict(float)
        for name, sec in self.threads.values():
            per[name] += sec
        print("CPU s per thread")
        for name, sec in sorted(per.items(), key=lambda x: -x[1]):
            if sec >= 0.1:
                print(f"  {name:24s} {sec:6.1f}")


def main(height: int, seconds: int) -> None:
    video = speed_clip(height, seconds, 1)
    for owner, name, label in STEPS:
        _timed(owner, name, label)
    _waited(engine.BackgroundWriter, "write_picture")
    _waited(engine.BackgroundWriter, "write_source")
    models.preload()
    with tempfile.TemporaryDirectory() as tmp:
        with ThreadCPU() as ident:
            w0, c0 = time.perf_counter(), time.process_time()
            session = lipdub.identify(video, out_dir=Path(tmp) / "session")
            iwall, icpu = time.perf_counter() - w0, time.process_time() - c0
        fa = [lipdub.FaceAudio(session.faces[0].face_id, str(MEDIA / "musetalk__eng.wav"),
                               sync_mode="loop")]
        with ThreadCPU() as sync:
            w0, c0 = time.perf_counter(), time.process_time()
            r = lipdub.sync(video, fa, out_path=Path(tmp) / "out.mp4", session=session)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"{height}p {seconds} s, one face: identify wall {iwall:.1f} s, CPU {icpu:.1f} s, "
          f"{icpu / iwall:.2f} cores")
    ident.report()
    print(f"\nsync wall {wall:.1f} s, CPU {cpu:.1f} s, {cpu / wall:.2f} cores; stages " +
          ", ".join(f"{k} {v:.1f}" for k, v in r.timings.items()))
    sync.report()
    frames = max(CALLS["guarded render (all below but write-back)"], 1)
    print(f"\nsync's main thread, CPU ms per rendered frame ({frames} frames)")
    for _, _, label in STEPS:
        print(f"  {label:42s} {1000 * CPU[label] / frames:6.2f}")
    print(f"  waiting on the encoder's queue, s total    {WAIT[0]:6.1f}")


if __name__ == "__main__":
    args = [int(x) for x in sys.argv[1:3]]
    main(args[0] if args else 720, args[1] if len(args) > 1 else 60)

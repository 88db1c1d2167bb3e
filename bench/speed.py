"""Speed of identify and sync against the codec floor, clip by clip.

    .venv/bin/python -m bench.speed                  # every clip below
    .venv/bin/python -m bench.speed 720p60 1080p10x3 # some of them
    .venv/bin/python -m bench.speed --repeat 3 720p60  # best of 3 (a shared machine)

"floor" is the work any re-rendering tool must do: decode every frame with PyAV and
encode every frame with libx264 veryfast CRF 18 (threads on). For each clip, floor,
identify and sync run back to back, each in a fresh process (peak RSS is its own; each
imports its modules, and identify loads its models, before the clock starts, as the floor
imports PyAV: the sync's import time is printed apart); sync loads the session identify
saved, as the service does. Printed: wall, CPU (user+sys, all threads; identify's too: on a
shared machine it moves less than wall time), peak
RSS, wall over the clip's duration (RTF, "x dur"), sync / floor in wall and CPU, and
sync's own stage times. Clips are real talking heads (bench/_clips.speed_clip), cached.
With ``--repeat N`` the three run N times, interleaved, and each prints its fastest run:
on a shared machine the slowest runs measure the neighbours, and interleaving makes the
floor and the stages see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._clips import MEDIA, speed_clip
from bench.common import run_child
from lipdub.media.memory import ALLOCATOR_ENV

# name: (height, seconds, faces)
CLIPS = {
    "480p60": (480, 60, 1),
    "720p10": (720, 10, 1),
    "720p60": (720, 60, 1),
    "1080p10": (1080, 10, 1),
    "1080p60": (1080, 60, 1),
    "1080p10x3": (1080, 10, 3),
    "1080p60x3": (1080, 60, 3),
    "4K10": (2160, 10, 1),
    "4K60": (2160, 60, 1),
}
# Each face's speech: its own clip, looped to the video's length where shorter.
SPEECH = ("musetalk__eng.wav", "musetalk__sun.wav", "sadtalker__japanese.wav")

CHILD = r"""
import json, resource, sys, time
stage, video, work = sys.argv[1:4]
faces = json.loads(sys.argv[4])

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

if stage == "floor":
    import av
    from fractions import Fraction
    c0, t0 = cpu(), time.perf_counter()
    inp = av.open(video)
    s = inp.streams.video[0]
    s.thread_type = "AUTO"
    out = av.open(work + "/floor.mp4", "w")
    v = out.add_stream("libx264", rate=s.average_rate)
    v.width, v.height, v.pix_fmt = s.codec_context.width, s.codec_context.height, "yuv420p"
    v.options = {"crf": "18", "preset": "veryfast"}
    v.thread_type = "AUTO"
    tb = Fraction(1, 1) / s.average_rate
    v.codec_context.time_base = tb
    for i, f in enumerate(inp.decode(s)):
        f.pts, f.time_base = i, tb
        for p in v.encode(f):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    out.close()
    inp.close()
    extra = {}
else:
    # Each stage's modules are imported before the clock, as the floor imports av: the
    # figures compare the work. The import time is printed apart (the service's engine
    # process pays it once per task).
    i0 = time.perf_counter()
    import lipdub
    if stage == "identify":  # a service holds its models; sync needs none
        from lipdub.faces import models
        models.preload()
    import lipdub.faces.session, lipdub.render.sync
    from lipdub.speech.visemes import frame_visemes
    extra_import = time.perf_counter() - i0
    c0, t0 = cpu(), time.perf_counter()
    if stage == "identify":
        s = lipdub.identify(video, out_dir=work + "/session")
        extra = {"faces": len(s.faces)}
    else:
        s = lipdub.Session.load(work + "/session")
        fa = [lipdub.FaceAudio(f.face_id, a, sync_mode="loop")
              for f, a in zip(s.faces, faces)]
        r = lipdub.sync(video, fa, out_path=work + "/out.mp4", session=s)
        extra = {"timings": r.timings}
    extra["import_s"] = extra_import
# VmHWM, not ru_maxrss: Linux carries the forking parent's RSS into ru_maxrss across exec
# (this bench's own process, which built the clip, counted as the child's peak).
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": cpu() - c0,
                  "rss_mb": hwm / 1024, **extra}))
"""


def run(stage: str, video: Path, work: Path, faces: list[str]) -> dict[str, Any]:
    # The allocator settings the service gives its engine children (lipdub.media.memory).
    env = {**ALLOCATOR_ENV, **os.environ} if stage != "floor" else None
    return run_child(CHILD, [stage, str(video), str(work), json.dumps(faces)], env,
                     what=f"{stage} on {video.name}")


def best(stage: str, video: Path, work: Path, faces: list[str],
         runs: list[dict[str, Any]]) -> None:
    runs.append(run(stage, video, work, faces))
    runs.sort(key=lambda r: float(r["wall"]))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips", nargs="*", metavar="clip",
                    help=f"some of: {' '.join(CLIPS)} (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, fastest kept")
    args = ap.parse_args(argv)
    if unknown := set(args.clips) - set(CLIPS):
        ap.error(f"unknown clip(s): {' '.join(sorted(unknown))}")
    names = args.clips or list(CLIPS)
    head = (f"{'clip':10s} {'dur':>4s} | {'floor s':>7s} {'cpu':>6s} | {'ident s':>7s} "
            f"{'x dur':>5s} {'cpu':>5s} {'MB':>5s} | {'sync s':>7s} {'cpu':>6s} {'RTF':>5s} "
            f"{'MB':>5s} | "
            f"{'wall/fl':>7s} {'cpu/fl':>6s} | sync stages s (prep bank select render+enc)")
    print(head)
    print("-" * len(head))
    imports: list[str] = []
    for name in names:
        height, seconds, nfaces = CLIPS[name]
        video = speed_clip(height, seconds, nfaces)
        faces = [str(MEDIA / a) for a in SPEECH[:nfaces]]
        fls: list[dict[str, Any]] = []
        ids: list[dict[str, Any]] = []
        sys_: list[dict[str, Any]] = []
        for _ in range(max(args.repeat, 1)):
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                best("floor", video, work, faces, fls)
                best("identify", video, work, faces, ids)
                best("sync", video, work, faces, sys_)
        fl, idf, sy = fls[0], ids[0], sys_[0]
        t = sy.get("timings", {})
        assert isinstance(t, dict)
        stages = " ".join(f"{float(t.get(k, 0.0)):5.1f}" for k in
                          ("prepare_s", "bank_s", "select_s", "render_encode_s"))
        fw, fc = float(fl["wall"]), float(fl["cpu"])
        iw, sw, sc = (float(idf["wall"]), float(sy["wall"]),
                      float(sy["cpu"]))
        print(f"{name:10s} {seconds:4d} | {fw:7.1f} {fc:6.1f} | {iw:7.1f} {iw / seconds:5.2f} "
              f"{float(idf['cpu']):5.1f} {float(idf['rss_mb']):5.0f} | {sw:7.1f} {sc:6.1f} "
              f"{sw / seconds:5.2f} "
              f"{float(sy['rss_mb']):5.0f} | {sw / fw:7.2f} {sc / fc:6.2f} | {stages}",
              flush=True)
        imports.append(f"{name} {float(sy.get('import_s', 0.0)):.2f} s")
    if imports:
        print("sync's imports, before its clock (paid once per task by the service's engine "
              "process): " + ", ".join(imports))


if __name__ == "__main__":
    main(sys.argv[1:])

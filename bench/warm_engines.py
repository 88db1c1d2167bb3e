"""Warm engines (issue 23, item 2): what a task pays besides the engine's own work.

One run, on one machine, measures:

1. An identify of a 5 s clip (``videoretalking__face_2.mp4``) by the CLI (``lipdub
   identify``, a fresh process: wall time of the command) and through the API, submit to
   completed (client wall time, polled every 50 ms), on a warm server (the default fork
   server) and on a cold one (``LIPDUB_ENGINE_START=cold``: a fresh interpreter per
   task), interleaved round by round (every other round in reverse order) so load on
   the shared machine hits all three alike.
   Also the engine alone in this process (models loaded before the clock starts): the
   API's time minus it is the per-task overhead. Medians over ``--rounds``.
2. Tasks per hour of short clips (the first 2 s of the same clip) with one worker slot,
   warm and cold: ``--cold-tasks`` submitted at once to the cold server, ``--tasks`` to
   the warm one.
3. Memory over the warm run: RSS of the server process (API + worker), of its fork
   server and of the engine children, sampled every 0.25 s; printed per tenth of the
   run (after how many tasks completed).

    .venv/bin/python -m bench.warm_engines [--rounds 7] [--tasks 200] [--cold-tasks 30]
    .venv/bin/python -m bench.warm_engines --rounds 15 --tasks 0 --cold-tasks 0  # 1. only

Prints JSON lines; not a pass/fail test (tests/service/test_warm_engine.py is).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from lipdub.service.worker.runner import rss_mb
from tests.mediagen import crop_video
from tests.service.helpers import GEN, MEDIA, Server, lipdub_cmd, upload_file

CLIP = MEDIA / "videoretalking__face_2.mp4"  # 5.04 s, 844x844, one face
ENV = {
    # One key submits everything: neither the request rate nor the account's pending
    # task limit may throttle what is measured.
    "LIPDUB_RATE_LIMIT_PER_S": "0",
    "LIPDUB_MAX_TASKS_PER_ACCOUNT": "0",
}


def children(ppid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == ppid:
            found.append(int(stat.parent.name))
    return found


def submit(api: httpx.Client, video_url: str) -> str:
    r = api.post(GEN, json={"model": "kling-identify-face", "video_url": video_url})
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["taskId"])


def state(api: httpx.Client, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = api.get(GEN, params={"task_id": task_id}).json()["data"]
    return data


def api_identify(api: httpx.Client, video_url: str) -> float:
    """Seconds from submit to a completed task, as a client sees it."""
    t0 = time.perf_counter()
    task_id = submit(api, video_url)
    while (d := state(api, task_id))["state"] not in ("completed", "failed"):
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    assert d["state"] == "completed", d
    return elapsed


def cli_identify(out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [*lipdub_cmd(), "identify", str(CLIP), "--out", str(out), "--json"],
        check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def in_process_identify(out: Path) -> float:
    import lipdub

    t0 = time.perf_counter()
    lipdub.identify(CLIP, out_dir=out)
    return time.perf_counter() - t0


class Sampler:
    """RSS of the server, its fork server and the engine children, every 0.25 s."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.samples: list[dict[str, float]] = []
        self.done_tasks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            zygotes = children(self.server_pid)
            engines = [c for z in zygotes for c in children(z)]
            self.samples.append({
                "done": self.done_tasks,
                "server": rss_mb(self.server_pid),
                "fork_server": sum(rss_mb(z) for z in zygotes),
                "engines": sum(rss_mb(e) for e in engines),
            })

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def throughput(
    server: Server, key: str, video_url: str, n: int, sample: bool
) -> dict[str, Any]:
    with server.client(key) as api:
        sampler = Sampler(server.proc.pid) if sample and server.proc else None
        t0 = time.perf_counter()
        ids = [submit(api, video_url) for _ in range(n)]
        pending = list(ids)
        failed = 0
        while pending:
            time.sleep(0.2)
            still = []
            for tid in pending:
                d = state(api, tid)
                if d["state"] in ("completed", "failed"):
                    failed += d["state"] == "failed"
                else:
                    still.append(tid)
            pending = still
            if sampler:
                sampler.done_tasks = n - len(pending)
        elapsed = time.perf_counter() - t0
        if sampler:
            sampler.stop()
    out: dict[str, Any] = {
        "tasks": n, "failed": failed, "seconds": round(elapsed, 1),
        "tasks_per_hour": round(n / elapsed * 3600),
    }
    if sampler:
        out["memory"] = memory_summary(sampler.samples, n)
    return out


def memory_summary(samples: list[dict[str, float]], n: int) -> list[dict[str, Any]]:
    """Per tenth of the run (by tasks completed): median server and fork-server RSS,
    peak engine RSS (all children at once), peak total."""
    rows = []
    for k in range(10):
        lo, hi = n * k // 10, n * (k + 1) // 10
        part = [s for s in samples if lo <= s["done"] < hi or (k == 9 and s["done"] == n)]
        if not part:
            continue
        rows.append({
            "tasks_done": f"{lo}-{hi}",
            "server_mb": round(statistics.median(s["server"] for s in part), 1),
            "fork_server_mb": round(statistics.median(s["fork_server"] for s in part), 1),
            "engines_peak_mb": round(max(s["engines"] for s in part), 1),
            "total_peak_mb": round(
                max(s["server"] + s["fork_server"] + s["engines"] for s in part), 1
            ),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--cold-tasks", type=int, default=30)
    args = ap.parse_args()

    from lipdub.faces import models

    models.preload()  # the in-process engine figure leaves out loading, as a warm child does
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        short = crop_video(CLIP, tmp / "face_2s.mp4", 2.0)
        warm = Server(tmp / "warm", env=ENV).start()
        cold = Server(tmp / "cold", env={**ENV, "LIPDUB_ENGINE_START": "cold"}).start()
        try:
            keys = {s: s.new_key("bench", "10") for s in (warm, cold)}
            apis = {s: s.client(keys[s]) for s in (warm, cold)}
            urls = {s: upload_file(apis[s], CLIP) for s in (warm, cold)}
            short_urls = {s: upload_file(apis[s], short) for s in (warm, cold)}
            # One task each first: the warm server's fork server has loaded, and the
            # page cache holds the clip and the models for everyone.
            for s in (warm, cold):
                api_identify(apis[s], urls[s])
            cli_identify(tmp / "cli0")
            times: dict[str, list[float]] = {"cli": [], "warm": [], "cold": [], "engine": []}
            measure = {
                "cli": lambda r: cli_identify(tmp / f"cli{r}"),
                "warm": lambda r: api_identify(apis[warm], urls[warm]),
                "cold": lambda r: api_identify(apis[cold], urls[cold]),
                "engine": lambda r: in_process_identify(tmp / f"engine{r}"),
            }
            for r in range(args.rounds):
                # Every other round backwards: a load that rises or falls through a round
                # does not always land on the same one.
                for name in list(measure)[:: 1 if r % 2 == 0 else -1]:
                    times[name].append(measure[name](r))
                print(json.dumps({"round": r, **{k: round(v[-1], 3) for k, v in times.items()}}),
                      flush=True)
            med = {k: statistics.median(v) for k, v in times.items()}
            warm_over_cli = [w / c for w, c in zip(times["warm"], times["cli"], strict=True)]
            print(json.dumps({
                "clip": CLIP.name,
                "rounds": args.rounds,
                "median_s": {k: round(v, 3) for k, v in med.items()},
                "api_over_cli": {
                    "warm": round(med["warm"] / med["cli"], 3),
                    "cold": round(med["cold"] / med["cli"], 3),
                },
                "per_round_warm_over_cli": [round(x, 3) for x in warm_over_cli],
                "median_of_per_round_warm_over_cli": round(statistics.median(warm_over_cli), 3),
                "overhead_s": {
                    "warm": round(med["warm"] - med["engine"], 3),
                    "cold": round(med["cold"] - med["engine"], 3),
                    "cli": round(med["cli"] - med["engine"], 3),
                },
            }), flush=True)
            for s in (warm, cold):
                apis[s].close()
            if args.cold_tasks:
                cold_run = throughput(cold, keys[cold], short_urls[cold], args.cold_tasks, False)
                print(json.dumps({"short_clip_s": 2.0, "engine": "cold", **cold_run}),
                      flush=True)
            if args.tasks:
                warm_run = throughput(warm, keys[warm], short_urls[warm], args.tasks, True)
                print(json.dumps({"short_clip_s": 2.0, "engine": "warm", **warm_run}),
                      flush=True)
        finally:
            warm.kill()
            cold.kill()


if __name__ == "__main__":
    main()

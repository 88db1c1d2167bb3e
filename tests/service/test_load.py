"""Slow sources cannot stall the API (issue 8, case 2): 50 trickling downloads in flight
on a real `lipdub serve`, while health, metrics, media, task queries and another
account's submission keep their usual latency."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .helpers import GEN, MEDIA, MediaServer, Server, TrickleServer, percentile

TRICKLES = 50
ACCOUNTS = 10  # 5 downloads each: the per-account limit
WINDOW_S = 14.0  # the minimum-rate window: long enough to measure while all 50 trickle
MEASURE_S = 8.0


@pytest.mark.slow
def test_fifty_trickling_downloads_do_not_stall_the_api(
    tmp_path: Path, media_server: MediaServer
) -> None:
    server = Server(
        tmp_path / "load",
        workers=0,
        env={
            "LIPDUB_MAX_DOWNLOADS": "64",
            "LIPDUB_MAX_DOWNLOADS_PER_ACCOUNT": "5",
            "LIPDUB_FETCH_RATE_WINDOW_S": str(WINDOW_S),
            "LIPDUB_FETCH_TIMEOUT_S": "60",
        },
    ).start()
    trickle = TrickleServer(interval_s=0.1)
    try:
        keys = [server.new_key(f"slow-{i}", "1") for i in range(ACCOUNTS)]
        other = server.new_key("bystander", "1")
        with server.client(other) as c:
            up = c.post("/api/v1/files", files={"file": ("a.wav", b"\0" * 50_000)})
            media_url = up.json()["data"]["url"]
            task_id = c.post(
                GEN,
                json={
                    "model": "kling-identify-face",
                    "video_url": media_server.url("videoretalking__face_2.mp4"),
                },
            ).json()["data"]["taskId"]

        def slow_submit(i: int) -> tuple[int, str, float]:
            t0 = time.monotonic()
            r = httpx.post(
                server.url + GEN,
                json={"model": "kling-identify-face", "video_url": trickle.url(str(i))},
                headers={"Authorization": f"Bearer {keys[i % ACCOUNTS]}"},
                timeout=90,
            )
            return r.status_code, r.json()["msg"], time.monotonic() - t0

        with ThreadPoolExecutor(TRICKLES) as pool:
            started = time.monotonic()
            futures = [pool.submit(slow_submit, i) for i in range(TRICKLES)]
            while trickle.active < TRICKLES and time.monotonic() - started < 20:
                time.sleep(0.05)
            assert trickle.active == TRICKLES, f"only {trickle.active} downloads started"

            latencies: dict[str, list[float]] = {
                k: [] for k in ("health", "metrics", "media", "query")
            }
            submit_s: list[float] = []
            video = (MEDIA / "videoretalking__face_2.mp4").read_bytes()
            with httpx.Client(timeout=10) as anon, server.client(other) as c:
                calls = {
                    "health": lambda: anon.get(server.url + "/healthz"),
                    "metrics": lambda: anon.get(server.url + "/metrics"),
                    "media": lambda: anon.get(media_url),
                    "query": lambda: c.get(GEN, params={"task_id": task_id}),
                }
                end = time.monotonic() + MEASURE_S
                while time.monotonic() < end:
                    for name, call in calls.items():
                        t0 = time.perf_counter()
                        r = call()
                        latencies[name].append(time.perf_counter() - t0)
                        assert r.status_code == 200, (name, r.text)
                    if len(latencies["health"]) % 40 == 0:  # another account's real work
                        t0 = time.perf_counter()
                        r = c.post("/api/v1/files", files={"file": ("v.mp4", video)})
                        r = c.post(
                            GEN,
                            json={
                                "model": "kling-identify-face",
                                "video_url": r.json()["data"]["url"],
                            },
                        )
                        submit_s.append(time.perf_counter() - t0)
                        assert r.status_code == 200, r.text
                    time.sleep(0.03)
                assert trickle.active == TRICKLES  # still all in flight while we measured
            results = [f.result(timeout=60) for f in futures]
    finally:
        trickle.close()
        server.kill()

    every = [x for v in latencies.values() for x in v]
    figures = {k: (len(v), percentile(v, 0.5), percentile(v, 0.99)) for k, v in latencies.items()}
    print(
        f"\n{TRICKLES} trickles in flight: n / p50 / p99 per endpoint (s): {figures}; "
        f"all p99 {percentile(every, 0.99) * 1000:.1f} ms; submissions {submit_s}"
    )
    for name, (_, _, p99) in figures.items():
        assert p99 < 0.2, f"{name} p99 {p99 * 1000:.0f} ms under {TRICKLES} trickles"
    assert submit_s and max(submit_s) < 2.0, submit_s
    # Every trickle was cut by the minimum rate, one window in, long before the deadline.
    for status, msg, took in results:
        assert status == 400 and "was cut off" in msg, msg
        assert took < WINDOW_S + 10, took

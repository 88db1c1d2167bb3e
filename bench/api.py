"""API speed: task queries per second and latency percentiles on loopback.

Starts a real `lipdub serve` (embedded default: API + one in-process worker) on a free
port with its own data dir, creates a key, runs one real identify task to completion,
then hammers ``GET /api/v1/audio/generations?task_id=`` with keep-alive connections from
a lean asyncio client (raw HTTP/1.1, so the client costs little of the 2 cores) for a
fixed time. Prints figures; it is not a pass/fail test.

    .venv/bin/python -m bench.api [--seconds 10] [--connections 8]
    .venv/bin/python -m bench.api --postgresql postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from tests.service.helpers import MediaServer, Server, wait_task

REPO = Path(__file__).resolve().parents[1]


async def worker(
    port: int, request: bytes, stop_at: float, latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200") or b'"completed"' not in body:
                errors.append(head.split(b"\r\n")[0].decode())
    finally:
        writer.close()


async def hammer(
    port: int, request: bytes, seconds: float, connections: int
) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(
        *(worker(port, request, stop_at, latencies, errors) for _ in range(connections))
    )
    return latencies, errors, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument(
        "--postgresql",
        metavar="URL",
        help="run against PostgreSQL (a throw-away schema in this database) instead of SQLite",
    )
    args = ap.parse_args()
    # One key sends every query: the per-account request rate limit would measure itself.
    env = {"LIPDUB_RATE_LIMIT_PER_S": "0"}
    schema = None
    if args.postgresql:
        from sqlalchemy import create_engine, text

        schema = f"bench_{int(time.time())}"
        admin = create_engine(args.postgresql)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        env["LIPDUB_DATABASE_URL"] = f"{args.postgresql}?options=-csearch_path%3D{schema}"

    media = MediaServer()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "bench", env=env).start()
        try:
            key = server.new_key("bench", "1")
            with server.client(key) as api:
                r = api.post(
                    "/api/v1/audio/generations",
                    json={
                        "model": "kling-identify-face",
                        "video_url": media.url("videoretalking__face_2.mp4"),
                    },
                )
                task_id = r.json()["data"]["taskId"]
                assert wait_task(api, task_id)["state"] == "completed"
            request = (
                f"GET /api/v1/audio/generations?task_id={task_id} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {key}\r\n\r\n"
            ).encode()
            asyncio.run(hammer(server.port, request, args.warmup, args.connections))
            lat, errors, elapsed = asyncio.run(
                hammer(server.port, request, args.seconds, args.connections)
            )
        finally:
            server.kill()
            media.close()
            if schema:
                with admin.begin() as conn:
                    conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) > 100 else [float("nan")] * 99
    figures = {
        "store": "postgresql" if args.postgresql else "sqlite",
        "requests": len(lat),
        "errors": len(errors),
        "seconds": round(elapsed, 2),
        "connections": args.connections,
        "qps": round(len(lat) / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p90_ms": round(q[89] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

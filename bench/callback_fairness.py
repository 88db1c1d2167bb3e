"""Callbacks of two accounts behind one receiver host (issue 23, item 1), in real time.

A real HTTP receiver on loopback plays a webhook gateway: account X's endpoint
(``/x``) hangs past the callback timeout, account Y's (``/y``, same host:port) answers at
once. Ten X tasks finish and queue their callbacks; then, while X's endpoint keeps
timing out, one Y task finishes every few seconds. Prints how long each Y callback took
from its task's end to the receiver, and how X's deliveries fared (attempts, state).
Contract settings: 10 s timeout, 1/2/4 s quick retries, real time. Not a pass/fail test
(tests/service/test_callback_fairness.py is).

    .venv/bin/python -m bench.callback_fairness [--seconds 40]
    .venv/bin/python -m bench.callback_fairness --postgresql postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from lipdub.service.callbacks.sender import CallbackDispatcher
from tests.service.helpers import Receiver
from tests.service.test_callbacks import finish_task_with_callback, make_ctx

Y_EVERY_S = 2.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--x-tasks", type=int, default=10)
    ap.add_argument("--postgresql", help="run on this PostgreSQL (a scratch schema)")
    args = ap.parse_args()
    schema = None
    with tempfile.TemporaryDirectory() as tmp:
        url = None
        if args.postgresql:
            schema = "bench_" + uuid.uuid4().hex[:8]
            with create_engine(args.postgresql).begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            url = f"{args.postgresql}?options=-csearch_path%3D{schema}"
        try:
            run(Path(tmp), url, args.seconds, args.x_tasks)
        finally:
            if schema:
                with create_engine(args.postgresql).begin() as conn:
                    conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def run(tmp: Path, url: str | None, seconds: float, x_tasks: int) -> None:
    ctx = make_ctx(tmp, url)  # contract defaults: 10 s timeout, real time
    gateway = Receiver(hang_paths={"/x"})
    x = [finish_task_with_callback(ctx, gateway.base + "/x", "x") for _ in range(x_tasks)]
    d = CallbackDispatcher(ctx)
    start = time.monotonic()
    d.start()
    delays: list[tuple[float, float]] = []
    try:
        gateway.wait(1, timeout=10)
        while time.monotonic() - start < seconds:
            queued = time.monotonic()
            task = finish_task_with_callback(ctx, gateway.base + "/y", "y")
            d.wake()
            while time.monotonic() - queued < 60:
                hit = next((h for h in gateway.hits_at("/y")
                            if h.json()["data"]["taskId"] == task), None)
                if hit is not None:
                    delays.append((queued - start, hit.at - queued))
                    break
                time.sleep(0.01)
            else:
                delays.append((queued - start, float("inf")))
            time.sleep(max(0.0, Y_EVERY_S - (time.monotonic() - queued)))
        # X as it stands now (releasing the receiver below would let a hanging attempt
        # answer late and count as delivered).
        rows = [ctx.store.delivery_for_task(t) for t in x]
        first_x = {}
        for h in gateway.hits_at("/x"):
            first_x.setdefault(h.json()["data"]["taskId"], h.at - start)
    finally:
        gateway.released.set()
        d.stop()
        gateway.close()
    db = "PostgreSQL" if url else "SQLite"
    print(f"{db}: {x_tasks} X callbacks to a hanging endpoint, Y's endpoint on the same "
          f"host:port, {seconds:g} s")
    for at, delay in delays:
        print(f"  Y queued at {at:5.1f} s: arrived after {delay:.3f} s")
    ys = [dl for _, dl in delays]
    print(f"Y: {len(ys)} callbacks, median {statistics.median(ys):.3f} s, max {max(ys):.3f} s")
    attempts = [int(r["attempts"]) for r in rows if r is not None]
    states = collections.Counter(str(r["state"]) for r in rows if r is not None)
    at_x = len(gateway.hits_at("/x"))
    print(f"X: {at_x} attempts reached the endpoint; per delivery {attempts}; "
          f"states {dict(states)}; most hanging at once {gateway.max_hanging}; "
          f"first attempts at {sorted(round(v, 1) for v in first_x.values())} s")


if __name__ == "__main__":
    main()

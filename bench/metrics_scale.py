"""/metrics and /healthz cost with a million finished tasks (issue 9, defect 7).

    .venv/bin/python -m bench.metrics_scale [--rows 1000000] [--pg URL]

Fills a fresh PostgreSQL schema with finished tasks (and the task_stats counters the
finishing transactions would have kept), then times a Prometheus scrape of the store
collector, the old whole-table GROUP BY it replaced, and the health probe.
"""

from __future__ import annotations

import argparse
import time
import uuid

from prometheus_client import generate_latest
from sqlalchemy import create_engine, text

from lipdub.service.ops.health import HealthProbe
from lipdub.service.ops.metrics import make_registry
from lipdub.service.store import Store

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def timed(fn: object, n: int = 5) -> float:
    best = 1e9
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--pg", default=PG)
    args = ap.parse_args()
    schema = "bench_" + uuid.uuid4().hex[:8]
    admin = create_engine(args.pg)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{args.pg}?options=-csearch_path%3D{schema}"
    try:
        store = Store.open(url)
        store.create_key("bulk", 0)
        t0 = time.perf_counter()
        filler = create_engine(url)  # no statement timeout: the fill is one long INSERT
        with filler.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tasks (id, account, model, state, param_json, job_json, "
                    "price_micros, progress, attempts, create_ms, complete_ms, purged) "
                    "SELECT 'b' || g, 'bulk', 'kling-identify-face', 'completed', '{}', '{}', "
                    "700, 1, 1, g * 10, g * 10 + 4000, 0 FROM generate_series(1, :n) g"
                ),
                {"n": args.rows},
            )
            conn.execute(
                text("INSERT INTO task_stats VALUES ('kling-identify-face', 'completed', 1, "
                     ":n, :s)"),
                {"n": args.rows, "s": args.rows * 4000},
            )
            conn.execute(text("ANALYZE tasks"))
        filler.dispose()
        fill = time.perf_counter() - t0
        registry = make_registry(store)
        scrape = timed(lambda: generate_latest(registry))

        def old_scan() -> None:  # what /metrics ran before: two whole-table aggregates
            with store.engines.read.connect() as conn:
                conn.execute(text("SELECT model, state, count(*) FROM tasks GROUP BY 1, 2")).all()
                conn.execute(text(
                    "SELECT model, count(*), sum(complete_ms - create_ms) FROM tasks "
                    "WHERE complete_ms IS NOT NULL GROUP BY 1")).all()

        old = timed(old_scan, 3)
        probe = HealthProbe(url, fresh_s=0)
        health = timed(lambda: probe.healthy())
        probe.close()
        print(f"rows {args.rows:,} (filled in {fill:.1f} s)")
        print(f"/metrics scrape: {scrape * 1000:.1f} ms; the old whole-table queries: "
              f"{old * 1000:.0f} ms; health probe: {health * 1000:.1f} ms")
        store.close()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    main()

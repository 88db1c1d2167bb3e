"""Limits over several API processes (issue 23, item 3): burst counts and what a check costs.

1. Bursts: two real `lipdub serve` processes on one database (one SQLite file;
   PostgreSQL; PostgreSQL with the limits in Redis), a rate limit of 5 requests/s, and
   48 requests from one account spread over both at once (12 warm connections). Prints
   how many were let in, and within the burst's first second.
2. Cost: sequential rate checks and slot take+release against each store, in this
   process (no HTTP): microseconds per operation.

    .venv/bin/python -m bench.shared_limits [--redis redis://127.0.0.1:6379/0]
        [--postgresql postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from lipdub.service.api.shared_limits import DatabaseLimits, RedisLimits, SharedLimits
from lipdub.service.store import Store
from tests.service.helpers import Server
from tests.service.test_shared_limits import RATE, Pair, burst


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    schema = "bench_" + uuid.uuid4().hex[:8]
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def drop_prefix(url: str, prefix: str) -> None:
    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(f"{prefix}*"))
    if keys:
        r.delete(*keys)
    r.close()


def bursts(root: Path, db_urls: dict[str, str], redis_url: str, prefix: str) -> None:
    for kind, db in db_urls.items():
        env = {
            "LIPDUB_DATABASE_URL": db,
            "LIPDUB_STORAGE_URL": f"file://{root / kind / 'media'}",
            "LIPDUB_SIGNING_KEY": "bench-key",
            "LIPDUB_RATE_LIMIT_PER_S": str(RATE),
            "LIPDUB_MAX_TASKS_PER_ACCOUNT": "0",
        }
        if kind.endswith("redis"):
            env |= {"LIPDUB_REDIS_URL": redis_url, "LIPDUB_REDIS_PREFIX": prefix}
        a = Server(root / kind / "a", env=env, workers=0).start()
        b = Server(root / kind / "b", env=env, workers=0).start()
        try:
            pair = Pair(kind, a, b)
            for i in range(3):
                key = a.new_key(f"burst{i}", "1")
                replies = burst(pair, key, per_server=24)
                let_in = [done for _, done, status in replies if status == 404]
                span = max(done for _, done, _ in replies)
                first = sum(1 for done in let_in if done < 0.99)
                print(f"{kind:20s} limit {RATE}/s: {len(let_in)} of {len(replies)} let in "
                      f"over {span:.2f} s, {first} within the first second")
                time.sleep(1.1)
        finally:
            a.kill()
            b.kill()


def cost(name: str, limits: SharedLimits, store: Store, n: int = 2000) -> None:
    """Each of 50 accounts at the default limit (50/s), in turn: every check lets the
    request in and writes its window (the common case), none is ever refused."""
    accounts = [f"cost-{uuid.uuid4().hex[:6]}" for _ in range(50)]
    key = store.create_key(accounts[0], 0)
    t0 = time.perf_counter()
    for i in range(n):
        assert limits.hit(accounts[i % 50], 50)
    hit_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(n // 4):
        slot = limits.take_slot(accounts[i % 50], 4, 32, 30_000)
        limits.release_slot(slot, accounts[i % 50])
    slot_us = (time.perf_counter() - t0) / (n // 4) * 1e6
    t0 = time.perf_counter()
    for _ in range(n):
        store.account_for_key(key)
    read_us = (time.perf_counter() - t0) / n * 1e6
    print(f"{name:20s} rate check {hit_us:6.0f} us, slot take+release {slot_us:6.0f} us "
          f"(the key lookup every request makes: {read_us:4.0f} us)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgresql", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--cost-only", action="store_true", help="skip the bursts")
    args = ap.parse_args()
    prefix = f"lipdub-bench-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as tmp, pg_schema(args.postgresql) as pg1, \
            pg_schema(args.postgresql) as pg2, pg_schema(args.postgresql) as pg3:
        root = Path(tmp)
        try:
            if not args.cost_only:
                bursts(root, {"sqlite": f"sqlite:///{root / 'shared.db'}", "postgresql": pg1,
                              "postgresql+redis": pg2}, args.redis, prefix)
            sqlite_store = Store.open(f"sqlite:///{root / 'cost.db'}")
            pg_store = Store.open(pg3)
            cost("sqlite", DatabaseLimits(sqlite_store), sqlite_store)
            cost("postgresql", DatabaseLimits(pg_store), pg_store)
            cost("redis", RedisLimits(args.redis, prefix), sqlite_store)
            sqlite_store.close()
            pg_store.close()
        finally:
            drop_prefix(args.redis, prefix)


if __name__ == "__main__":
    main()

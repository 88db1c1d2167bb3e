"""Database engines and start-up migrations, for SQLite (WAL) and PostgreSQL alike.

SQLite needs two engines: writers open ``BEGIN IMMEDIATE`` so two writers never both
hold a read snapshot and then deadlock upgrading it (the classic "database is locked"),
while readers use plain deferred transactions and, thanks to WAL, never wait for writers.
PostgreSQL uses one engine for both: row locks and ``SKIP LOCKED`` do the work there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant; serialises concurrent migrations of API and worker processes.
PG_MIGRATION_LOCK = 7_244_337


@dataclass(frozen=True)
class Engines:
    read: Engine
    write: Engine

    @property
    def dialect(self) -> str:
        return self.write.dialect.name

    def dispose(self) -> None:
        self.read.dispose()
        if self.write is not self.read:
            self.write.dispose()


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so "begin" below decides the mode.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    if immediate:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    # Readers stay in the driver's autocommit: each SELECT is its own snapshot, which is
    # all the read paths need, and saves a BEGIN/ROLLBACK round per query.

    return engine


def make_engines(url: str) -> Engines:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return Engines(read=_sqlite_engine(url, False), write=_sqlite_engine(url, True))
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    return Engines(read=engine, write=engine)


def migrate(engines: Engines) -> None:
    """Bring the schema to the newest revision; safe to run from several processes."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engines.write.begin() as conn:
        if engines.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def now_ms() -> int:
    return int(time.time() * 1000)

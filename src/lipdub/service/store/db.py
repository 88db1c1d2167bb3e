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
from sqlalchemy.engine import Connection, make_url

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant; serialises concurrent migrations of API and worker processes.
PG_MIGRATION_LOCK = 7_244_337
# A database that does not answer must fail a statement in seconds, not hang a request or
# a worker for the kernel's TCP timeout (minutes): connect, statement and keepalive limits.
# The statement limit is far above any query the service makes (milliseconds); it exists
# for the connection that hangs without breaking (a black-holed network path).
PG_CONNECT_TIMEOUT_S = 5
PG_STATEMENT_TIMEOUT_MS = 30_000
PG_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
                "keepalives_count": 3, "tcp_user_timeout": 15_000}


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
    engine = create_engine(
        pg_url(url),
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        connect_args=pg_connect_args(url),
    )
    return Engines(read=engine, write=engine)


def pg_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def pg_connect_args(
    url: str, connect_timeout_s: float = PG_CONNECT_TIMEOUT_S,
    statement_timeout_ms: int = PG_STATEMENT_TIMEOUT_MS,
) -> dict[str, Any]:
    """libpq timeouts and keepalives; ``options`` already in the URL (e.g. a search_path)
    are kept, since connect_args would otherwise replace them."""
    given = make_url(pg_url(url)).query.get("options", "")
    options = " ".join(
        x for x in (given if isinstance(given, str) else " ".join(given),
                    f"-c statement_timeout={statement_timeout_ms}") if x
    )
    return {"connect_timeout": max(1, int(connect_timeout_s)), "options": options,
            **PG_KEEPALIVE}


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(engines: Engines) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engines.read.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class NewerDatabase(Exception):
    """The database was migrated by a newer lipdub than this one."""


def migrate(engines: Engines, target: str = "head", downgrade: bool = False) -> None:
    """Move the schema to ``target``; safe to run from several processes at once. A
    database at a revision this code does not know raises NewerDatabase (one line for
    the operator) instead of alembic's "Can't locate revision" traceback."""
    cfg = alembic_config()
    with engines.write.begin() as conn:
        if engines.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
        check_not_newer(conn)
        cfg.attributes["connection"] = conn
        if downgrade:
            command.downgrade(cfg, target)
        else:
            command.upgrade(cfg, target)


def check_not_newer(conn: Connection) -> None:
    from alembic.runtime.migration import MigrationContext

    current = MigrationContext.configure(conn).get_current_revision()
    if current is not None and current not in known_revisions():
        raise NewerDatabase(
            f"The database is at schema revision {current}, newer than this lipdub knows "
            f"(its newest is {head_revision()}): upgrade lipdub on this machine to the "
            "fleet's version."
        )


def now_ms() -> int:
    return int(time.time() * 1000)


def db_now_ms(conn: Connection) -> int:
    """The database's clock: leases and completion times must not depend on the clock of
    whichever machine runs the worker (one 40 s ahead took running tasks at once).
    SQLite is embedded, so its clock is this machine's."""
    if conn.dialect.name == "postgresql":
        value = conn.execute(
            text("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
        ).scalar_one()
        return int(value)
    return now_ms()

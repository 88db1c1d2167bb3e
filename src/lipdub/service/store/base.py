"""What every area of the store shares: the engines, the row type, the constants, the
errors callers catch, and the few statements several areas run inside their own
transactions (the ledger row, the workers' wake-up, reading one task).

All SQL of the service lives in this package (procrastinate's lesson): the API, the
workers and the callback sender call ``Store`` methods and never build queries
themselves. Each public method is one transaction, so the money and the task state
always move together.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.engine import Connection, RowMapping

from lipdub.service.store import tables as t
from lipdub.service.store.db import Engines, db_now_ms, make_engines, migrate, now_ms

if TYPE_CHECKING:
    from typing import Self

    from lipdub.service.store.outbox import CallbackFormat

Row = RowMapping
ACTIVE_STATES = ("pending", "processing")
DAY_MS = 86_400_000
# Bucket bounds of the task-duration histogram (task_stats.bucket indexes them).
DURATION_BOUNDS_MS = [1000, 5000, 15000, 30000, 60000, 120000, 300000, 600000, 1800000]
# How long a statement that moves money or finishes a task is retried through a database
# outage (a failover, a restart) before the caller sees the error.
DB_RETRY_S = 60.0
# PostgreSQL channel a submission notifies; idle workers LISTEN on it (see worker/wakeup.py).
TASKS_CHANNEL = "lipdub_tasks"

_TASK_BY_ID = select(t.tasks).where(t.tasks.c.id == bindparam("id"))
_TASK_BY_ID_ACCOUNT = _TASK_BY_ID.where(t.tasks.c.account == bindparam("account"))
ACTIVE_TASKS = select(func.count()).where(
    t.tasks.c.account == bindparam("account"), t.tasks.c.state.in_(ACTIVE_STATES)
)


class InsufficientBalance(Exception):
    def __init__(self, needed: int, balance: int) -> None:
        super().__init__(f"needs {needed} micro-dollars, balance {balance}")
        self.needed = needed
        self.balance = balance


class UnknownAccount(Exception):
    pass


class AccountExists(Exception):
    pass


class TooManyTasks(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} tasks already pending or processing")
        self.limit = limit


class UploadQuota(Exception):
    """An upload would pass the account's daily upload or stored-bytes allowance."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_task_id() -> str:
    return "cl" + uuid.uuid4().hex


class StoreBase:
    """The engines and what every area's methods share; ``Store`` is the whole."""

    def __init__(self, engines: Engines, callbacks: CallbackFormat | None = None) -> None:
        self.engines = engines
        # The callback wire format (bodies of failures the store decides, destinations):
        # handed in by whoever opens the store, so the store never builds a payload.
        self.callbacks = callbacks

    @classmethod
    def open(
        cls, url: str, run_migrations: bool = True, *, callbacks: CallbackFormat | None = None
    ) -> Self:
        engines = make_engines(url)
        if run_migrations:
            migrate(engines)
        return cls(engines, callbacks)

    def close(self) -> None:
        self.engines.dispose()

    def get_task(self, task_id: str, account: str | None = None) -> Row | None:
        # The query path's hot spot: prebuilt statements skip SQLAlchemy's per-call
        # expression building (about half the cost of a read).
        with self.engines.read.connect() as conn:
            if account is None:
                res = conn.execute(_TASK_BY_ID, {"id": task_id})
            else:
                res = conn.execute(_TASK_BY_ID_ACCOUNT, {"id": task_id, "account": account})
            return res.mappings().first()

    def _ledger(
        self,
        conn: Connection,
        account: str,
        task_id: str | None,
        kind: str,
        amount: int,
        balance_after: int,
        reserved_after: int,
        note: str = "",
    ) -> None:
        conn.execute(
            insert(t.ledger).values(
                account=account,
                task_id=task_id,
                kind=kind,
                amount_micros=amount,
                balance_after=balance_after,
                reserved_after=reserved_after,
                note=note,
                created_ms=now_ms(),
            )
        )

    @staticmethod
    def _notify_workers(conn: Connection) -> None:
        """Wake idle workers on PostgreSQL; delivered at commit, dropped on rollback."""
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"NOTIFY {TASKS_CHANNEL}"))

    def db_now(self) -> int:
        """Now in ms by the database's clock (the fleet's one clock)."""
        with self.engines.read.connect() as conn:
            return db_now_ms(conn)

    def ping(self) -> None:
        """One round trip (the health probe)."""
        with self.engines.read.connect() as conn:
            conn.execute(select(1))

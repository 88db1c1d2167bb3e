"""Upstream engines in the store: each account's engine, and what a task did upstream
(its upstream task and session ids, last status, identify's answer, the charge).

An upstream record is written the moment the upstream call returns, in its own short
transaction, not with the task's completion: the completion may never come (the worker
is killed), and the next attempt must find the upstream task instead of submitting, and
paying for, it again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from lipdub.service.retry import retry_transient
from lipdub.service.store import tables as t
from lipdub.service.store.base import DB_RETRY_S, Row, StoreBase, UnknownAccount
from lipdub.service.store.db import now_ms

# What record_upstream may set.
UPSTREAM_FIELDS = {"upstream_task_id", "upstream_session_id", "status", "response_json", "charge"}


class UpstreamStore(StoreBase):
    def set_account_engine(self, account: str, engine: str | None) -> None:
        """The engine of the account's new tasks; None = the service's default."""
        with self.engines.write.begin() as conn:
            res = conn.execute(
                update(t.accounts).where(t.accounts.c.name == account).values(engine=engine)
            )
            if res.rowcount == 0:
                raise UnknownAccount(account)

    def account_exists(self, account: str) -> bool:
        with self.engines.read.connect() as conn:
            found = conn.execute(select(t.accounts.c.name).where(t.accounts.c.name == account))
            return found.first() is not None

    def account_engine(self, account: str) -> str | None:
        with self.engines.read.connect() as conn:
            return conn.execute(
                select(t.accounts.c.engine).where(t.accounts.c.name == account)
            ).scalar()

    def upstream(self, task_id: str) -> Row | None:
        with self.engines.read.connect() as conn:
            return (
                conn.execute(select(t.upstream_tasks).where(t.upstream_tasks.c.task_id == task_id))
                .mappings()
                .first()
            )

    def record_upstream(self, task_id: str, engine: str, **values: Any) -> None:
        """Create or update the task's upstream record (retried through an outage: the
        upstream call it records has already been paid for)."""
        unknown = set(values) - UPSTREAM_FIELDS
        if unknown:
            raise ValueError(f"not upstream fields: {sorted(unknown)}")

        def once() -> None:
            now = now_ms()
            change = update(t.upstream_tasks).where(t.upstream_tasks.c.task_id == task_id)
            try:
                with self.engines.write.begin() as conn:
                    if conn.execute(change.values(update_ms=now, **values)).rowcount:
                        return
                    conn.execute(
                        insert(t.upstream_tasks).values(
                            task_id=task_id, engine=engine, create_ms=now, update_ms=now,
                            **values,
                        )
                    )
            except IntegrityError:  # another attempt inserted it first: update theirs
                with self.engines.write.begin() as conn:
                    conn.execute(change.values(update_ms=now, **values))

        retry_transient(once, f"task {task_id}: recording the upstream call", DB_RETRY_S)

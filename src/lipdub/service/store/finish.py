"""Ending a task: complete, fail or cancel, each with its settle or refund, its stats row
and its callback in one transaction, fenced by the attempt's lease."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from lipdub.service.retry import retry_transient
from lipdub.service.store import tables as t
from lipdub.service.store.base import ACTIVE_STATES, DB_RETRY_S, DURATION_BOUNDS_MS, Row
from lipdub.service.store.db import db_now_ms, now_ms
from lipdub.service.store.outbox import BodyFor, OutboxStore


class FinishStore(OutboxStore):
    def complete(
        self,
        task_id: str,
        owner: str,
        result: dict[str, Any],
        complete_ms: int | None,
        callback_body: BodyFor,
        session: dict[str, Any] | None = None,
        session_ttl_ms: int = 0,
        retry_s: float = DB_RETRY_S,
    ) -> bool:
        """Mark done, settle the reservation, record the session and queue the callback,
        all or nothing. The lease owner check fences off an attempt that lost its lease:
        False means another attempt owns the task (this one must discard its output).

        ``complete_ms`` None means now by the database's clock (what workers use), and
        then ``callback_body`` may be a function of that time. Transient errors are
        retried for ``retry_s``: finished work is not thrown away because the database
        blinked. A retry that finds the task completed with this very result knows the
        interrupted try committed, and answers True."""
        result_json = json.dumps(result, separators=(",", ":"))

        def once() -> bool:
            with self.engines.write.begin() as conn:
                row = self._owned(conn, task_id, owner)
                if row is None:
                    return self._finished_as(conn, task_id, "completed", result_json)
                done = db_now_ms(conn) if complete_ms is None else complete_ms
                conn.execute(
                    update(t.tasks)
                    .where(t.tasks.c.id == task_id)
                    .values(
                        state="completed",
                        progress=1.0,
                        result_json=result_json,
                        complete_ms=done,
                        lease_owner=None,
                        lease_until_ms=None,
                    )
                )
                acc = conn.execute(
                    update(t.accounts)
                    .where(t.accounts.c.name == row["account"])
                    .values(reserved_micros=t.accounts.c.reserved_micros - row["price_micros"])
                    .returning(t.accounts.c.balance_micros, t.accounts.c.reserved_micros)
                ).one()
                self._ledger(
                    conn, row["account"], task_id, "settle", row["price_micros"], acc[0], acc[1]
                )
                self._count_finished(conn, row, "completed", done)
                if session is not None:
                    values = dict(session)
                    if session_ttl_ms:
                        values.update(create_ms=done, expires_ms=done + session_ttl_ms)
                    conn.execute(insert(t.sessions).values(**values))
                body = _body_at(callback_body, done)
                if body is not None and row["callback_url"]:
                    self._queue_delivery(conn, row, body, done)
                return True

        return retry_transient(once, f"task {task_id}: recording completion", retry_s)

    def fail(
        self,
        task_id: str,
        owner: str | None,
        code: str,
        message: str,
        complete_ms: int | None,
        callback_body: BodyFor,
        retry_s: float = DB_RETRY_S,
    ) -> bool:
        """Fail the task and refund it (fenced like ``complete``, retried the same way)."""

        def once() -> bool:
            with self.engines.write.begin() as conn:
                row = self._owned(conn, task_id, owner)
                if row is None:
                    return False
                done = db_now_ms(conn) if complete_ms is None else complete_ms
                body = _body_at(callback_body, done)
                self._finish_failed(conn, row, body, code, message, done)
                return True

        return retry_transient(once, f"task {task_id}: recording failure", retry_s)

    def _finished_as(self, conn: Connection, task_id: str, state: str, result_json: str) -> bool:
        row = conn.execute(
            select(t.tasks.c.state, t.tasks.c.result_json).where(t.tasks.c.id == task_id)
        ).first()
        return row is not None and row[0] == state and row[1] == result_json

    def _count_finished(self, conn: Connection, row: Row, state: str, done_ms: int) -> None:
        """Add the task to task_stats, in the transaction that finishes it."""
        duration = max(0, done_ms - int(row["create_ms"]))
        bucket = next(
            (i for i, b in enumerate(DURATION_BOUNDS_MS) if duration <= b),
            len(DURATION_BOUNDS_MS),
        )
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = dialect_insert(t.task_stats).values(
            model=row["model"], state=state, bucket=bucket, n=1, sum_ms=duration
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["model", "state", "bucket"],
                set_={"n": t.task_stats.c.n + 1, "sum_ms": t.task_stats.c.sum_ms + duration},
            )
        )

    def _owned(self, conn: Connection, task_id: str, owner: str | None) -> Row | None:
        q = select(t.tasks).where(t.tasks.c.id == task_id, t.tasks.c.state == "processing")
        if owner is not None:
            q = q.where(t.tasks.c.lease_owner == owner)
        return conn.execute(q.with_for_update()).mappings().first()

    def _finish_failed(
        self,
        conn: Connection,
        row: Row,
        callback_body: str | None,
        code: str,
        message: str,
        complete_ms: int,
    ) -> None:
        conn.execute(
            update(t.tasks)
            .where(t.tasks.c.id == row["id"])
            .values(
                state="failed",
                fail_code=code,
                fail_msg=message,
                complete_ms=complete_ms,
                lease_owner=None,
                lease_until_ms=None,
                result_json=json.dumps({"resultUrls": []}),
            )
        )
        acc = conn.execute(
            update(t.accounts)
            .where(t.accounts.c.name == row["account"])
            .values(
                balance_micros=t.accounts.c.balance_micros + row["price_micros"],
                reserved_micros=t.accounts.c.reserved_micros - row["price_micros"],
            )
            .returning(t.accounts.c.balance_micros, t.accounts.c.reserved_micros)
        ).one()
        self._ledger(conn, row["account"], row["id"], "refund", row["price_micros"], acc[0], acc[1])
        self._count_finished(conn, row, "failed", complete_ms)
        if row["callback_url"]:
            if callback_body is None:
                # Failed by the store itself (worker lost, cancelled): the format says how.
                callback_body = self._format().failure_body(row, code, message, complete_ms)
            self._queue_delivery(conn, row, callback_body, complete_ms)

    def cancel(self, task_id: str, account: str, message: str) -> tuple[Row | None, bool]:
        """Fail a pending or processing task with failCode ``cancelled``: refund and
        callback as any failure, in one transaction. Returns the task as it now is (None if
        the account has no such task) and whether this call cancelled it. A worker running
        it finds its lease gone at the next heartbeat and stops its engine."""
        with self.engines.write.begin() as conn:
            row = (
                conn.execute(
                    select(t.tasks)
                    .where(t.tasks.c.id == task_id, t.tasks.c.account == account)
                    .with_for_update()
                )
                .mappings()
                .first()
            )
            if row is None:
                return None, False
            active = row["state"] in ACTIVE_STATES
            if active:
                self._finish_failed(conn, row, None, "cancelled", message, now_ms())
        return self.get_task(task_id), active


def _body_at(body: BodyFor, done_ms: int) -> str | None:
    return body(done_ms) if callable(body) else body

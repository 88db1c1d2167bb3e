"""The callback outbox: deliveries queued in the transaction that ends a task, claimed
one attempt at a time under a short lease, and their outcomes (with running totals).

The store does not know the callback wire format: the bodies of the failures it decides
itself (a cancel, a task whose worker kept dying) and a receiver's destination (the key
that keeps one slow receiver from holding up the others) come from the ``CallbackFormat``
it was opened with (``lipdub.service.callbacks.payloads.WIRE``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from typing import Any, Protocol

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from lipdub.service.store import tables as t
from lipdub.service.store.base import Row, StoreBase
from lipdub.service.store.db import now_ms

# A callback body given to complete/fail: ready, a function of the completion time (when
# that time is the database's, known only inside the transaction), or none.
BodyFor = str | Callable[[int], str] | None
_DELIVERY_BY_TASK = select(t.deliveries).where(t.deliveries.c.task_id == bindparam("task_id"))


class CallbackFormat(Protocol):
    """What the store needs of the callback wire format."""

    def failure_body(self, row: Row, code: str, message: str, complete_ms: int) -> str:
        """The body announcing that the task of ``row`` failed with ``code``."""
        ...

    def destination(self, url: str) -> str:
        """The receiver a callback URL names (deliveries to one are paced together)."""
        ...


class OutboxStore(StoreBase):
    def _format(self) -> CallbackFormat:
        if self.callbacks is None:
            raise RuntimeError(
                "this Store was opened without a callback format: pass "
                "callbacks=lipdub.service.callbacks.payloads.WIRE (Context.build does)"
            )
        return self.callbacks

    def _queue_delivery(self, conn: Connection, row: Row, body: str, when_ms: int) -> None:
        conn.execute(
            insert(t.deliveries).values(
                id="msg_" + uuid.uuid4().hex,
                task_id=row["id"],
                account=row["account"],
                url=row["callback_url"],
                dest=self._format().destination(row["callback_url"]),
                body=body,
                state="pending",
                attempts=0,
                next_ms=when_ms,
                create_ms=when_ms,
            )
        )

    @staticmethod
    def _due(now: int, skip_dests: Collection[str]) -> list[Any]:
        d = t.deliveries.c
        cond = [
            d.state == "pending",
            d.next_ms <= now,
            or_(d.lease_until_ms.is_(None), d.lease_until_ms < now),
        ]
        if skip_dests:
            cond.append(or_(d.dest.is_(None), d.dest.not_in(list(skip_dests))))
        return cond

    def claim_delivery(self, lease_ms: int, skip_dests: Collection[str] = ()) -> Row | None:
        """The most overdue delivery not being sent, except to ``skip_dests`` (busy or
        backing-off receivers), leased for one attempt."""
        with self.engines.write.begin() as conn:
            now = now_ms()
            row = (
                conn.execute(
                    select(t.deliveries)
                    .where(*self._due(now, skip_dests))
                    .order_by(t.deliveries.c.next_ms)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            conn.execute(
                update(t.deliveries)
                .where(t.deliveries.c.id == row["id"])
                .values(lease_until_ms=now + lease_ms)
            )
            return row

    def delivery_due(self, skip_dests: Collection[str] = ()) -> bool:
        """Whether claim_delivery would find a row now (a cheap read before the write)."""
        with self.engines.read.connect() as conn:
            q = select(t.deliveries.c.id).where(*self._due(now_ms(), skip_dests)).limit(1)
            return conn.execute(q).first() is not None

    def record_delivery(
        self,
        delivery_id: str,
        *,
        ok: bool,
        status: int | None,
        error: str | None,
        attempt_ms: int,
        next_ms: int | None,
    ) -> None:
        """Store one attempt's outcome; ``next_ms`` None after a failure means give up."""
        values: dict[str, Any] = {
            "attempts": t.deliveries.c.attempts + 1,
            "last_status": status,
            "last_error": error,
            "lease_until_ms": None,
            "first_ms": func.coalesce(t.deliveries.c.first_ms, attempt_ms),
        }
        if ok:
            values.update(state="delivered", delivered_ms=now_ms())
        elif next_ms is None:
            values.update(state="failed")
        else:
            values.update(next_ms=next_ms)
        with self.engines.write.begin() as conn:
            attempts = conn.execute(
                update(t.deliveries)
                .where(t.deliveries.c.id == delivery_id, t.deliveries.c.state == "pending")
                .values(**values)
                .returning(t.deliveries.c.attempts)
            ).scalar()
            final = values.get("state")
            if attempts is not None and final is not None:
                self._count_delivery(conn, str(final), int(attempts))

    def _count_delivery(self, conn: Connection, state: str, attempts: int) -> None:
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = dialect_insert(t.delivery_stats).values(state=state, n=1, attempts=attempts)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["state"],
                set_={
                    "n": t.delivery_stats.c.n + 1,
                    "attempts": t.delivery_stats.c.attempts + attempts,
                },
            )
        )

    def delivery_for_task(self, task_id: str) -> Row | None:
        with self.engines.read.connect() as conn:
            return conn.execute(_DELIVERY_BY_TASK, {"task_id": task_id}).mappings().first()

    def deliveries_for_tasks(self, task_ids: Collection[str]) -> dict[str, Row]:
        if not task_ids:
            return {}
        with self.engines.read.connect() as conn:
            rows = conn.execute(
                select(t.deliveries).where(t.deliveries.c.task_id.in_(list(task_ids)))
            ).mappings()
            return {r["task_id"]: r for r in rows}

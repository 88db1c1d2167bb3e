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
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, func, insert, or_, select, true, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

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


@dataclass(frozen=True)
class DeliveryGate:
    """Which due deliveries a dispatcher may start now (its own in-flight bookkeeping,
    handed to the claim so that one query picks among exactly the startable rows).

    A delivery to an endpoint (its URL) in ``backed_off`` goes only through the probe
    lane, and only if the endpoint is in ``probe_ready``; any other delivery needs a free
    slot at its destination (not in ``full_dests``) and its account's share of that
    destination (``(dest, account)`` not in ``full_shares``).
    """

    full_dests: frozenset[str] = frozenset()
    full_shares: frozenset[tuple[str, str]] = frozenset()
    backed_off: frozenset[str] = frozenset()
    probe_ready: frozenset[str] = frozenset()

    def condition(self) -> Any:
        d = t.deliveries.c
        regular: list[ColumnElement[bool]] = []
        if self.backed_off:
            regular.append(d.url.not_in(sorted(self.backed_off)))
        # Rows written before destinations were recorded have no dest: never excluded.
        if self.full_dests:
            regular.append(or_(d.dest.is_(None), d.dest.not_in(sorted(self.full_dests))))
        if self.full_shares:
            regular.append(
                or_(d.dest.is_(None), tuple_(d.dest, d.account).not_in(sorted(self.full_shares)))
            )
        cond = and_(*regular) if regular else true()
        if self.probe_ready:
            cond = or_(cond, d.url.in_(sorted(self.probe_ready)))
        return cond


OPEN_GATE = DeliveryGate()


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
    def _due(now: int, gate: DeliveryGate) -> list[Any]:
        d = t.deliveries.c
        return [
            d.state == "pending",
            d.next_ms <= now,
            or_(d.lease_until_ms.is_(None), d.lease_until_ms < now),
            gate.condition(),
        ]

    def claim_delivery(self, lease_ms: int, gate: DeliveryGate = OPEN_GATE) -> Row | None:
        """The most overdue delivery not being sent that ``gate`` lets start (see
        DeliveryGate), leased for one attempt."""
        with self.engines.write.begin() as conn:
            now = now_ms()
            row = (
                conn.execute(
                    select(t.deliveries)
                    .where(*self._due(now, gate))
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

    def delivery_due(self, gate: DeliveryGate = OPEN_GATE) -> bool:
        """Whether claim_delivery would find a row now (a cheap read before the write)."""
        with self.engines.read.connect() as conn:
            q = select(t.deliveries.c.id).where(*self._due(now_ms(), gate)).limit(1)
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

"""Reading tasks for the API: by id or idempotency key, an account's page of tasks, its
running count, task prices for the console, and identify sessions."""

from __future__ import annotations

from sqlalchemy import and_, or_, select

from lipdub.service.store import tables as t
from lipdub.service.store.base import ACTIVE_TASKS, Row, StoreBase


class TaskReads(StoreBase):
    def find_external(self, account: str, external_task_id: str) -> Row | None:
        with self.engines.read.connect() as conn:
            return (
                conn.execute(
                    select(t.tasks).where(
                        t.tasks.c.account == account,
                        t.tasks.c.external_task_id == external_task_id,
                    )
                )
                .mappings()
                .first()
            )

    def active_tasks(self, account: str) -> int:
        with self.engines.read.connect() as conn:
            return int(conn.execute(ACTIVE_TASKS, {"account": account}).scalar() or 0)

    def list_tasks(
        self,
        account: str,
        limit: int,
        before: tuple[int, str] | None = None,
        model: str | None = None,
        state: str | None = None,
    ) -> list[Row]:
        """The account's tasks newest first, from just after ``before`` (create_ms, id):
        a keyset cursor, so pages stay stable while new tasks arrive."""
        c = t.tasks.c
        q = select(t.tasks).where(c.account == account)
        if model is not None:
            q = q.where(c.model == model)
        if state is not None:
            q = q.where(c.state == state)
        if before is not None:
            ms, task_id = before
            q = q.where(or_(c.create_ms < ms, and_(c.create_ms == ms, c.id < task_id)))
        q = q.order_by(c.create_ms.desc(), c.id.desc()).limit(limit)
        with self.engines.read.connect() as conn:
            return list(conn.execute(q).mappings())

    def task_prices(self, account: str, task_ids: list[str]) -> dict[str, int]:
        """What each of the account's tasks was charged (or reserved); others' ids are
        absent (the console's cost column)."""
        if not task_ids:
            return {}
        with self.engines.read.connect() as conn:
            rows = conn.execute(
                select(t.tasks.c.id, t.tasks.c.price_micros).where(
                    t.tasks.c.account == account, t.tasks.c.id.in_(task_ids)
                )
            )
            return {r[0]: int(r[1]) for r in rows}

    def get_session(self, session_id: str, account: str) -> Row | None:
        with self.engines.read.connect() as conn:
            return (
                conn.execute(
                    select(t.sessions).where(
                        t.sessions.c.session_id == session_id, t.sessions.c.account == account
                    )
                )
                .mappings()
                .first()
            )

"""The queue: submitting a task (its price reserved in the same transaction), claiming
the next one under a lease in fair order, heartbeats, and giving a task back."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from lipdub.service.retry import retry_transient
from lipdub.service.store import tables as t
from lipdub.service.store.base import (
    ACTIVE_TASKS,
    DB_RETRY_S,
    InsufficientBalance,
    Row,
    TooManyTasks,
)
from lipdub.service.store.db import db_now_ms, now_ms
from lipdub.service.store.finish import FinishStore
from lipdub.service.store.tasks import TaskReads

# Pending tasks considered per claim: the fair order's head, in case some are locked.
CLAIM_CANDIDATES = 8


@dataclass(frozen=True)
class Submission:
    """A checked request ready to queue: its inputs are already stored under
    ``tasks/<task_id>/`` and ``job`` names them (see api/submission.py)."""

    account: str
    model: str
    param: dict[str, Any]
    job: dict[str, Any]
    price_micros: int
    callback_url: str | None
    external_task_id: str | None
    task_id: str
    # The API it came through: None for the reseller contract, "kling" for Kling's own.
    via: str | None = None
    # config.ENGINES; the task runs there whatever the account chooses later.
    engine: str = "local"


class QueueStore(FinishStore, TaskReads):
    def submit(
        self, sub: Submission, max_active: int = 0, retry_s: float = DB_RETRY_S
    ) -> tuple[Mapping[Any, Any], bool]:
        """Reserve the price and queue the task; returns (task, created).

        A repeated ``external_task_id`` returns the first task and charges nothing. The
        balance check and the debit are one conditional UPDATE, so concurrent submissions
        can never overdraw: the database decides who gets the last cent. That UPDATE also
        locks the account's row, so the count of its running tasks that follows
        (``max_active``, 0 = no limit) is exact under concurrency too.

        A transient database error is retried for ``retry_s``; each retry first looks for
        the task by its id, since the interrupted try may have committed (a connection
        cut between COMMIT and its answer): the task is charged once either way. The task
        is returned as inserted, without reading it back: a read that fails after the
        commit must not turn an accepted, charged task into an error.
        """
        if sub.external_task_id:
            existing = self.find_external(sub.account, sub.external_task_id)
            if existing is not None:
                return existing, False
        retried = False

        def once() -> tuple[Mapping[Any, Any], bool]:
            if retried:
                found = self.get_task(sub.task_id)
                if found is not None:
                    return found, True
            return self._submit_once(sub, max_active)

        def note_retry() -> None:
            nonlocal retried
            retried = True

        return retry_transient(once, f"task {sub.task_id}: submit", retry_s, note_retry)

    def _submit_once(self, sub: Submission, max_active: int) -> tuple[Mapping[Any, Any], bool]:
        try:
            with self.engines.write.begin() as conn:
                row = conn.execute(
                    update(t.accounts)
                    .where(
                        t.accounts.c.name == sub.account,
                        t.accounts.c.balance_micros >= sub.price_micros,
                    )
                    .values(
                        balance_micros=t.accounts.c.balance_micros - sub.price_micros,
                        reserved_micros=t.accounts.c.reserved_micros + sub.price_micros,
                    )
                    .returning(t.accounts.c.balance_micros, t.accounts.c.reserved_micros)
                ).first()
                if row is None:
                    balance = conn.execute(
                        select(t.accounts.c.balance_micros).where(t.accounts.c.name == sub.account)
                    ).scalar()
                    raise InsufficientBalance(sub.price_micros, int(balance or 0))
                if max_active > 0:
                    active = conn.execute(ACTIVE_TASKS, {"account": sub.account}).scalar()
                    if int(active or 0) >= max_active:
                        raise TooManyTasks(max_active)  # rolls the reservation back
                values = {
                    "id": sub.task_id,
                    "account": sub.account,
                    "model": sub.model,
                    "state": "pending",
                    "external_task_id": sub.external_task_id,
                    "param_json": json.dumps(sub.param, separators=(",", ":")),
                    "job_json": json.dumps(sub.job, separators=(",", ":")),
                    "price_micros": sub.price_micros,
                    "progress": 0.0,
                    "attempts": 0,
                    "callback_url": sub.callback_url,
                    "create_ms": now_ms(),
                    "purged": 0,
                    "via": sub.via,
                    "engine": sub.engine,
                }
                conn.execute(insert(t.tasks).values(**values))
                self._ledger(
                    conn, sub.account, sub.task_id, "reserve", sub.price_micros, row[0], row[1]
                )
                self._notify_workers(conn)
        except IntegrityError:
            # Lost a race on the same external_task_id: the winner's task is the answer,
            # and our whole transaction (the reservation too) was rolled back.
            if sub.external_task_id:
                existing = self.find_external(sub.account, sub.external_task_id)
                if existing is not None:
                    return existing, False
            raise
        task: dict[str, Any] = {c.name: None for c in t.tasks.columns}
        task.update(values)
        return task, True

    def claim(self, worker: str, lease_ms: int, max_attempts: int) -> Row | None:
        """Take a runnable task under a lease: first one whose worker stopped renewing its
        lease (it died or stalled), else the next pending task in fair order (see
        ``_fair_pending``). Too many attempts fail the task.

        Each claim starts a new attempt with an id of its own (``<n>-<random>``); the
        lease owner is ``<worker>#<attempt id>``, the token that fences every later write
        of the attempt. Lease times come from the database's clock."""
        while True:
            with self.engines.write.begin() as conn:
                now = db_now_ms(conn)
                row = self._lapsed(conn, now) or self._fair_pending(conn)
                if row is None:
                    return None
                if row["attempts"] >= max_attempts:
                    self._finish_failed(
                        conn,
                        row,
                        None,
                        "worker_lost",
                        f"The task's worker stopped {row['attempts']} times while running it; "
                        "resubmit the task, and report it if this repeats.",
                        now,
                    )
                    continue
                attempt = int(row["attempts"]) + 1
                owner = f"{worker[:48]}#{attempt}-{uuid.uuid4().hex[:8]}"
                claimed = {
                    "state": "processing",
                    "attempts": attempt,
                    "lease_owner": owner,
                    "lease_until_ms": now + lease_ms,
                    "start_ms": row["start_ms"] if row["start_ms"] is not None else now,
                }
                conn.execute(update(t.tasks).where(t.tasks.c.id == row["id"]).values(**claimed))
            return {**row, **claimed}  # type: ignore[return-value]

    def _lapsed(self, conn: Connection, now: int) -> Row | None:
        c = t.tasks.c
        q = (
            select(t.tasks)
            .where(c.state == "processing", c.lease_until_ms < now)
            .order_by(c.lease_until_ms)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        return conn.execute(q).mappings().first()

    def _fair_pending(self, conn: Connection) -> Row | None:
        """The pending task that comes next when accounts take turns: a task's place is
        the number of its account's tasks ahead of it, running or pending, so one
        account's burst of 100 waits behind another account's first task instead of
        starving it. Ties go to the oldest."""
        c = t.tasks.c
        place = func.row_number().over(partition_by=c.account, order_by=c.create_ms)
        pending = select(c.id, c.account, c.create_ms, place.label("place")).where(
            c.state == "pending"
        ).subquery()
        running = (
            select(c.account, func.count().label("n"))
            .where(c.state == "processing")
            .group_by(c.account)
            .subquery()
        )
        order = (
            select(pending.c.id)
            .select_from(pending.outerjoin(running, running.c.account == pending.c.account))
            .order_by(pending.c.place + func.coalesce(running.c.n, 0), pending.c.create_ms)
            .limit(CLAIM_CANDIDATES)
        )
        for task_id in conn.execute(order).scalars():
            row = (
                conn.execute(
                    select(t.tasks)
                    .where(c.id == task_id, c.state == "pending")
                    .with_for_update(skip_locked=True)
                )
                .mappings()
                .first()
            )
            if row is not None:
                return row
        return None

    def heartbeat(self, task_id: str, owner: str, lease_ms: int, progress: float) -> bool:
        """Extend our lease and record progress; False means the task is no longer ours."""
        with self.engines.write.begin() as conn:
            res = conn.execute(
                _held(task_id, owner)
                .values(lease_until_ms=db_now_ms(conn) + lease_ms, progress=progress)
            )
            return bool(res.rowcount)

    def release(self, task_id: str, owner: str) -> bool:
        """Give a task back to the queue on a clean shutdown, without using up an attempt,
        so the next worker starts it at once instead of after the lease lapses."""
        with self.engines.write.begin() as conn:
            res = conn.execute(
                _held(task_id, owner)
                .values(
                    state="pending",
                    attempts=t.tasks.c.attempts - 1,
                    lease_owner=None,
                    lease_until_ms=None,
                    progress=0.0,
                )
            )
            self._notify_workers(conn)
            return bool(res.rowcount)


def _held(task_id: str, owner: str) -> Any:
    """UPDATE of the task while this attempt (``owner``) still runs it: the fence."""
    c = t.tasks.c
    return update(t.tasks).where(c.id == task_id, c.lease_owner == owner, c.state == "processing")

"""Every read and write of the service's state, one interface over SQLite and PostgreSQL.

All SQL lives here (procrastinate's lesson): the API, the workers and the callback
dispatcher call these methods and never build queries themselves. Each method is one
transaction, so the money and the task state always move together.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, case, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from lipdub.media.fetch import origin
from lipdub.service import tables as t
from lipdub.service.db import Engines, db_now_ms, make_engines, migrate, now_ms
from lipdub.service.faults import retry_transient
from lipdub.service.payloads import callback_body_for_failure

Row = RowMapping
ACTIVE_STATES = ("pending", "processing")
DAY_MS = 86_400_000
# Bucket bounds of the task-duration histogram (task_stats.bucket indexes them).
DURATION_BOUNDS_MS = [1000, 5000, 15000, 30000, 60000, 120000, 300000, 600000, 1800000]
# How long a statement that moves money or finishes a task is retried through a database
# outage (a failover, a restart) before the caller sees the error.
DB_RETRY_S = 60.0
# PostgreSQL channel a submission notifies; idle workers LISTEN on it (see wakeup.py).
TASKS_CHANNEL = "lipdub_tasks"
# Pending tasks considered per claim: the fair order's head, in case some are locked.
CLAIM_CANDIDATES = 8
BodyFor = str | Callable[[int], str] | None

_TASK_BY_ID = select(t.tasks).where(t.tasks.c.id == bindparam("id"))
_TASK_BY_ID_ACCOUNT = _TASK_BY_ID.where(t.tasks.c.account == bindparam("account"))
_ACCOUNT_BY_KEY = select(t.api_keys.c.account).where(
    t.api_keys.c.key_hash == bindparam("h"), t.api_keys.c.revoked_ms.is_(None)
)
_BALANCE = select(t.accounts.c.balance_micros).where(t.accounts.c.name == bindparam("account"))
_ACTIVE_TASKS = select(func.count()).where(
    t.tasks.c.account == bindparam("account"), t.tasks.c.state.in_(ACTIVE_STATES)
)
_DELIVERY_BY_TASK = select(t.deliveries).where(t.deliveries.c.task_id == bindparam("task_id"))


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


@dataclass(frozen=True)
class Submission:
    account: str
    model: str
    param: dict[str, Any]
    job: dict[str, Any]
    price_micros: int
    callback_url: str | None
    external_task_id: str | None
    task_id: str


class Store:
    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    @classmethod
    def open(cls, url: str, run_migrations: bool = True) -> Store:
        engines = make_engines(url)
        if run_migrations:
            migrate(engines)
        return cls(engines)

    def close(self) -> None:
        self.engines.dispose()

    # --- accounts and keys ---------------------------------------------------------

    def ensure_account(self, conn: Connection, name: str) -> None:
        exists = conn.execute(select(t.accounts.c.name).where(t.accounts.c.name == name)).first()
        if exists is None:
            conn.execute(
                insert(t.accounts).values(
                    name=name, balance_micros=0, reserved_micros=0, created_ms=now_ms()
                )
            )

    def create_key(self, account: str, credits_micros: int = 0, *, add_key: bool = True) -> str:
        """A new API key for ``account`` (created if missing); only its hash is stored.
        With ``add_key`` False an existing account raises AccountExists: creating an
        account twice must not add its initial credits twice."""
        key = "ld_" + secrets.token_urlsafe(32)
        with self.engines.write.begin() as conn:
            if not add_key and self._account_exists(conn, account):
                raise AccountExists(account)
            self.ensure_account(conn, account)
            conn.execute(
                insert(t.api_keys).values(
                    key_hash=hash_key(key), account=account, prefix=key[:10], created_ms=now_ms()
                )
            )
            if credits_micros:
                self._credit(conn, account, credits_micros, "initial credits")
        return key

    def _account_exists(self, conn: Connection, account: str) -> bool:
        found = conn.execute(select(t.accounts.c.name).where(t.accounts.c.name == account))
        return found.first() is not None

    def account_for_key(self, key: str) -> str | None:
        with self.engines.read.connect() as conn:
            return conn.execute(_ACCOUNT_BY_KEY, {"h": hash_key(key)}).scalar()

    def list_keys(self, account: str | None = None) -> list[Row]:
        q = select(
            t.api_keys.c.prefix, t.api_keys.c.account, t.api_keys.c.created_ms,
            t.api_keys.c.revoked_ms,
        ).order_by(t.api_keys.c.account, t.api_keys.c.created_ms)
        if account is not None:
            q = q.where(t.api_keys.c.account == account)
        with self.engines.read.connect() as conn:
            return list(conn.execute(q).mappings())

    def revoke_key(self, key_or_prefix: str) -> list[Row]:
        """Revoke the key given whole, or the one key whose listed prefix this is.
        Returns the matching keys (several means ambiguous: nothing is revoked)."""
        c = t.api_keys.c
        match = or_(c.key_hash == hash_key(key_or_prefix), c.prefix == key_or_prefix)
        with self.engines.write.begin() as conn:
            rows = list(
                conn.execute(
                    select(c.key_hash, c.prefix, c.account, c.revoked_ms).where(match)
                ).mappings()
            )
            if len(rows) == 1 and rows[0]["revoked_ms"] is None:
                conn.execute(
                    update(t.api_keys)
                    .where(c.key_hash == rows[0]["key_hash"])
                    .values(revoked_ms=now_ms())
                )
            return rows

    def add_credits(self, account: str, micros: int, note: str = "credits added") -> int:
        with self.engines.write.begin() as conn:
            if not self._account_exists(conn, account):
                raise UnknownAccount(account)
            return self._credit(conn, account, micros, note)

    def balance(self, account: str) -> int:
        with self.engines.read.connect() as conn:
            return int(conn.execute(_BALANCE, {"account": account}).scalar() or 0)

    def _credit(self, conn: Connection, account: str, micros: int, note: str) -> int:
        row = conn.execute(
            update(t.accounts)
            .where(t.accounts.c.name == account)
            .values(balance_micros=t.accounts.c.balance_micros + micros)
            .returning(t.accounts.c.balance_micros, t.accounts.c.reserved_micros)
        ).one()
        self._ledger(conn, account, None, "credit", micros, row[0], row[1], note)
        return int(row[0])

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

    def account_summary(self, account: str, ledger_rows: int = 20) -> dict[str, Any]:
        with self.engines.read.connect() as conn:
            acc = conn.execute(select(t.accounts).where(t.accounts.c.name == account)).mappings()
            row = acc.first()
            if row is None:
                raise UnknownAccount(account)
            entries = conn.execute(
                select(t.ledger)
                .where(t.ledger.c.account == account)
                .order_by(t.ledger.c.id.desc())
                .limit(ledger_rows)
            ).mappings()
            return {
                "account": account,
                "balance_micros": int(row["balance_micros"]),
                "reserved_micros": int(row["reserved_micros"]),
                "webhook_signing": row["webhook_secret"] is not None,
                "ledger": [dict(e) for e in entries],
            }

    def set_webhook_secret(self, account: str, secret: str | None) -> None:
        with self.engines.write.begin() as conn:
            res = conn.execute(
                update(t.accounts).where(t.accounts.c.name == account).values(webhook_secret=secret)
            )
            if res.rowcount == 0:
                raise UnknownAccount(account)

    def webhook_secret(self, account: str) -> str | None:
        with self.engines.read.connect() as conn:
            return conn.execute(
                select(t.accounts.c.webhook_secret).where(t.accounts.c.name == account)
            ).scalar()

    # --- tasks -----------------------------------------------------------------------

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
            return int(conn.execute(_ACTIVE_TASKS, {"account": account}).scalar() or 0)

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
                    active = conn.execute(_ACTIVE_TASKS, {"account": sub.account}).scalar()
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

    @staticmethod
    def _notify_workers(conn: Connection) -> None:
        """Wake idle workers on PostgreSQL; delivered at commit, dropped on rollback."""
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"NOTIFY {TASKS_CHANNEL}"))

    def get_task(self, task_id: str, account: str | None = None) -> Row | None:
        # The query path's hot spot: prebuilt statements skip SQLAlchemy's per-call
        # expression building (about half the cost of a read).
        with self.engines.read.connect() as conn:
            if account is None:
                res = conn.execute(_TASK_BY_ID, {"id": task_id})
            else:
                res = conn.execute(_TASK_BY_ID_ACCOUNT, {"id": task_id, "account": account})
            return res.mappings().first()

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
                update(t.tasks)
                .where(
                    t.tasks.c.id == task_id,
                    t.tasks.c.lease_owner == owner,
                    t.tasks.c.state == "processing",
                )
                .values(lease_until_ms=db_now_ms(conn) + lease_ms, progress=progress)
            )
            return bool(res.rowcount)

    def release(self, task_id: str, owner: str) -> bool:
        """Give a task back to the queue on a clean shutdown, without using up an attempt,
        so the next worker starts it at once instead of after the lease lapses."""
        with self.engines.write.begin() as conn:
            res = conn.execute(
                update(t.tasks)
                .where(
                    t.tasks.c.id == task_id,
                    t.tasks.c.lease_owner == owner,
                    t.tasks.c.state == "processing",
                )
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
                # Failed by the claimer (worker lost): build the body here from the row.
                callback_body = callback_body_for_failure(row, code, message, complete_ms)
            self._queue_delivery(conn, row, callback_body, complete_ms)

    # --- listing, cancelling and usage (API extensions) ---------------------------------

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

    def deliveries_for_tasks(self, task_ids: Collection[str]) -> dict[str, Row]:
        if not task_ids:
            return {}
        with self.engines.read.connect() as conn:
            rows = conn.execute(
                select(t.deliveries).where(t.deliveries.c.task_id.in_(list(task_ids)))
            ).mappings()
            return {r["task_id"]: r for r in rows}

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

    def spend(self, account: str, since_ms: int) -> list[tuple[int, str, int]]:
        """(settle time ms, model, micro-dollars) of every settled task since ``since_ms``:
        money actually spent (reserves refunded on failure are not spend)."""
        lg = t.ledger.c
        q = (
            select(lg.created_ms, t.tasks.c.model, lg.amount_micros)
            .join(t.tasks, t.tasks.c.id == lg.task_id)
            .where(lg.account == account, lg.kind == "settle", lg.created_ms >= since_ms)
        )
        with self.engines.read.connect() as conn:
            return [(int(r[0]), str(r[1]), int(r[2])) for r in conn.execute(q)]

    def balances(self, account: str) -> tuple[int, int]:
        """(balance, reserved) in micro-dollars."""
        with self.engines.read.connect() as conn:
            row = conn.execute(
                select(t.accounts.c.balance_micros, t.accounts.c.reserved_micros).where(
                    t.accounts.c.name == account
                )
            ).first()
            return (int(row[0]), int(row[1])) if row else (0, 0)

    # --- sessions --------------------------------------------------------------------

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

    # --- callback outbox ---------------------------------------------------------------

    def _queue_delivery(self, conn: Connection, row: Row, body: str, when_ms: int) -> None:
        conn.execute(
            insert(t.deliveries).values(
                id="msg_" + uuid.uuid4().hex,
                task_id=row["id"],
                account=row["account"],
                url=row["callback_url"],
                dest=origin(row["callback_url"]),
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

    # --- uploads ---------------------------------------------------------------------

    def upload_usage(self, account: str, now: int) -> tuple[int, int]:
        """(bytes uploaded in the last 24 h, bytes of uploads still stored)."""
        with self.engines.read.connect() as conn:
            return self._upload_usage(conn, account, now)

    def _upload_usage(self, conn: Connection, account: str, now: int) -> tuple[int, int]:
        u = t.uploads.c
        day = func.sum(case((u.create_ms > now - DAY_MS, u.size), else_=0))
        stored = func.sum(case((u.deleted == 0, u.size), else_=0))
        row = conn.execute(
            select(day, stored).where(
                u.account == account, or_(u.deleted == 0, u.create_ms > now - DAY_MS)
            )
        ).one()
        return int(row[0] or 0), int(row[1] or 0)

    def add_upload(
        self, key: str, account: str, name: str, size: int, now: int, expires_ms: int,
        max_per_day: int, max_stored: int,
    ) -> None:
        """Record a finished upload unless it passes the account's allowances (then
        UploadQuota). Locking the account row first makes the check exact when one
        account uploads several files at once."""
        with self.engines.write.begin() as conn:
            conn.execute(
                select(t.accounts.c.name).where(t.accounts.c.name == account).with_for_update()
            )
            day, stored = self._upload_usage(conn, account, now)
            if (max_per_day and day + size > max_per_day) or (
                max_stored and stored + size > max_stored
            ):
                raise UploadQuota(account)
            conn.execute(
                insert(t.uploads).values(
                    key=key, account=account, name=name[:256], size=size, create_ms=now,
                    expires_ms=expires_ms, deleted=0,
                )
            )

    def uploads_to_delete(self, now: int, limit: int = 500) -> list[str]:
        with self.engines.read.connect() as conn:
            rows = conn.execute(
                select(t.uploads.c.key)
                .where(t.uploads.c.deleted == 0, t.uploads.c.expires_ms < now)
                .limit(limit)
            )
            return [r[0] for r in rows]

    def mark_upload_deleted(self, key: str) -> None:
        with self.engines.write.begin() as conn:
            conn.execute(update(t.uploads).where(t.uploads.c.key == key).values(deleted=1))

    # --- retention and metrics -----------------------------------------------------------

    def tasks_to_purge(self, completed_before_ms: int, limit: int = 100) -> list[Row]:
        with self.engines.read.connect() as conn:
            return list(
                conn.execute(
                    select(t.tasks.c.id, t.tasks.c.model, t.tasks.c.result_json)
                    .where(t.tasks.c.complete_ms < completed_before_ms, t.tasks.c.purged == 0)
                    .limit(limit)
                ).mappings()
            )

    def mark_purged(self, task_id: str) -> None:
        with self.engines.write.begin() as conn:
            conn.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(purged=1))

    def count_tasks(self) -> list[tuple[str, str, int]]:
        """Tasks per (model, state): active ones counted through the claim index (they
        are few), finished ones from task_stats: cheap at any table size."""
        with self.engines.read.connect() as conn:
            active = conn.execute(
                select(t.tasks.c.model, t.tasks.c.state, func.count())
                .where(t.tasks.c.state.in_(ACTIVE_STATES))
                .group_by(t.tasks.c.model, t.tasks.c.state)
            )
            out = [(r[0], r[1], int(r[2])) for r in active]
            finished = conn.execute(
                select(t.task_stats.c.model, t.task_stats.c.state, func.sum(t.task_stats.c.n))
                .group_by(t.task_stats.c.model, t.task_stats.c.state)
            )
            return out + [(r[0], r[1], int(r[2])) for r in finished]

    def count_deliveries(self) -> list[tuple[str, int, int]]:
        """(state, deliveries, attempts) per delivery state: pending ones counted through
        the due index, final ones from delivery_stats."""
        d = t.deliveries.c
        with self.engines.read.connect() as conn:
            pending = conn.execute(
                select(func.count(), func.sum(d.attempts)).where(d.state == "pending")
            ).one()
            out = [("pending", int(pending[0]), int(pending[1] or 0))] if pending[0] else []
            final = conn.execute(select(t.delivery_stats))
            return out + [(r[0], int(r[1]), int(r[2])) for r in final]

    def task_durations(self) -> list[tuple[str, list[int], int, int]]:
        """Per model: cumulative counts of finished tasks at or under each of
        DURATION_BOUNDS_MS, count, and sum of durations, for a Prometheus histogram (from
        the store, so it covers workers in every process; from task_stats, so cheap)."""
        with self.engines.read.connect() as conn:
            rows = conn.execute(
                select(
                    t.task_stats.c.model, t.task_stats.c.bucket,
                    func.sum(t.task_stats.c.n), func.sum(t.task_stats.c.sum_ms),
                ).group_by(t.task_stats.c.model, t.task_stats.c.bucket)
            ).all()
        per_model: dict[str, list[int]] = {}
        sums: dict[str, int] = {}
        for model, bucket, n, total in rows:
            counts = per_model.setdefault(model, [0] * (len(DURATION_BOUNDS_MS) + 1))
            counts[int(bucket)] += int(n)
            sums[model] = sums.get(model, 0) + int(total or 0)
        out = []
        for model, counts in sorted(per_model.items()):
            cumulative, running = [], 0
            for c in counts[:-1]:
                running += c
                cumulative.append(running)
            out.append((model, cumulative, sum(counts), sums[model]))
        return out

    # --- fleet configuration -------------------------------------------------------------

    def fleet_config(self) -> dict[str, str]:
        with self.engines.read.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(select(t.fleet_config))}

    def set_fleet_config(self, values: Mapping[str, str]) -> None:
        with self.engines.write.begin() as conn:
            for key, value in values.items():
                conn.execute(t.fleet_config.delete().where(t.fleet_config.c.key == key))
                conn.execute(insert(t.fleet_config).values(key=key, value=value))

    def db_now(self) -> int:
        """Now in ms by the database's clock (the fleet's one clock)."""
        with self.engines.read.connect() as conn:
            return db_now_ms(conn)

    def ping(self) -> None:
        """One round trip (the health probe)."""
        with self.engines.read.connect() as conn:
            conn.execute(select(1))


def _body_at(body: BodyFor, done_ms: int) -> str | None:
    return body(done_ms) if callable(body) else body

"""Limits that hold across every API process sharing the database: the per-account
request rate (a moving window) and leased download slots.

Issue 23: each API process counted in its own memory, so two processes let twice the
limit through. Here every count is one short write transaction, serialised where it
must be (SQLite: its write lock, taken at BEGIN IMMEDIATE; PostgreSQL: a row lock per
account for the rate, one advisory lock for the slots, since the server-wide total needs
every acquisition in order). Times are the database's clock, so API machines whose
clocks disagree still share one window.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import bindparam, delete, func, insert, literal_column, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from lipdub.service.store import tables as t
from lipdub.service.store.base import StoreBase
from lipdub.service.store.db import db_now_ms, now_ms

# Any constant: serialises download-slot acquisitions of every API process.
PG_SLOTS_LOCK = 7_244_338
# These counts need not survive a database crash (a window or a slot lost with it is
# harmless), so their commits skip waiting for the WAL flush: a rate check cost ~8 ms
# on a busy machine with it, most of it the flush.
PG_NO_FLUSH = text("SET LOCAL synchronous_commit = off")
PG_CLOCK_MS: ColumnElement[int] = literal_column(
    "(extract(epoch from clock_timestamp()) * 1000)::bigint"
)


class DownloadSlotsFull(Exception):
    """No slot free: ``scope`` is "account" (its own limit) or "server" (the total)."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"no download slot free ({scope})")
        self.scope = scope


# Prebuilt: the rate check runs on every request, and building a statement costs about
# as much as running it on SQLite.
_W = t.rate_windows.c
_HITS = select(_W.hits).where(_W.account == bindparam("account"))
_PG_HITS = select(_W.hits, PG_CLOCK_MS).where(_W.account == bindparam("account")).with_for_update()
_SAVE_HITS = update(t.rate_windows).where(_W.account == bindparam("of")).values(
    hits=bindparam("window")
)
_NEW_WINDOW = {
    "postgresql": postgresql.insert(t.rate_windows).on_conflict_do_nothing(
        index_elements=["account"]
    ),
    "sqlite": sqlite.insert(t.rate_windows).on_conflict_do_nothing(index_elements=["account"]),
}


class LimitsStore(StoreBase):
    def rate_hit(self, account: str, limit: int, window_ms: int = 1000) -> bool:
        """Count one request of ``account`` if fewer than ``limit`` were let in during the
        last ``window_ms``; False (and nothing counted) otherwise."""
        with self.engines.write.begin() as conn:
            hits, now = self._locked_window(conn, account)
            recent = [h for h in hits if h > now - window_ms]
            if len(recent) >= limit:
                return False
            recent.append(now)
            conn.execute(
                _SAVE_HITS, {"of": account, "window": ",".join(map(str, recent[-limit:]))}
            )
            return True

    def _locked_window(self, conn: Connection, account: str) -> tuple[list[int], int]:
        """The account's window (its row locked for this transaction, created if new) and
        the time now, by the database's clock."""
        pg = conn.dialect.name == "postgresql"
        for _ in range(2):  # the second time, the row exists (ours or a racing process's)
            if pg:
                conn.execute(PG_NO_FLUSH)
                row = conn.execute(_PG_HITS, {"account": account}).first()
                now = int(row[1]) if row is not None else 0
            else:  # BEGIN IMMEDIATE already holds the write lock
                row = conn.execute(_HITS, {"account": account}).first()
                now = now_ms()
            if row is not None:
                return [int(x) for x in row[0].split(",") if x], now
            conn.execute(_NEW_WINDOW[conn.dialect.name], {"account": account, "hits": ""})
        raise RuntimeError(f"rate window of {account!r} missing after its insert")

    def take_download_slot(self, account: str, per_account: int, total: int, lease_ms: int) -> str:
        """A slot for one of ``account``'s downloads, leased for ``lease_ms``; its id.
        Raises DownloadSlotsFull when the account or the server has none free."""
        d = t.download_slots.c
        with self.engines.write.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(PG_NO_FLUSH)
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_SLOTS_LOCK})
            now = db_now_ms(conn)
            conn.execute(delete(t.download_slots).where(d.expires_ms < now))
            mine = conn.execute(
                select(func.count()).where(d.account == account)
            ).scalar_one()
            if mine >= per_account:
                raise DownloadSlotsFull("account")
            if conn.execute(select(func.count()).select_from(t.download_slots)).scalar_one() >= (
                total
            ):
                raise DownloadSlotsFull("server")
            slot = "dl_" + uuid.uuid4().hex
            conn.execute(
                insert(t.download_slots).values(id=slot, account=account, expires_ms=now + lease_ms)
            )
            return slot

    def renew_download_slots(self, slots: Collection[str], lease_ms: int) -> None:
        """Extend the leases of ``slots`` (downloads still running in this process)."""
        if not slots:
            return
        with self.engines.write.begin() as conn:
            now = db_now_ms(conn)
            conn.execute(
                update(t.download_slots)
                .where(t.download_slots.c.id.in_(list(slots)))
                .values(expires_ms=now + lease_ms)
            )

    def release_download_slot(self, slot: str) -> None:
        with self.engines.write.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(PG_NO_FLUSH)
            conn.execute(delete(t.download_slots).where(t.download_slots.c.id == slot))

    def download_slots_in_use(self) -> int:
        """Slots whose lease has not run out (for tests and metrics)."""
        with self.engines.write.begin() as conn:
            now = db_now_ms(conn)
            return int(
                conn.execute(
                    select(func.count()).where(t.download_slots.c.expires_ms >= now)
                ).scalar_one()
            )

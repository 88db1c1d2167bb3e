"""Uploads: per-account allowances checked and recorded in one transaction, and the
expired ones the janitor deletes."""

from __future__ import annotations

from sqlalchemy import case, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from lipdub.service.store import tables as t
from lipdub.service.store.base import DAY_MS, StoreBase, UploadQuota


class UploadsStore(StoreBase):
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

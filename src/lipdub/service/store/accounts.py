"""Accounts, API keys, balances and the ledger: every movement of money is a ledger row
written in the transaction that moves it."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection

from lipdub.service.store import tables as t
from lipdub.service.store.base import AccountExists, Row, StoreBase, UnknownAccount, hash_key
from lipdub.service.store.db import now_ms

_ACCOUNT_BY_KEY = select(t.api_keys.c.account).where(
    t.api_keys.c.key_hash == bindparam("h"), t.api_keys.c.revoked_ms.is_(None)
)
_BALANCE = select(t.accounts.c.balance_micros).where(t.accounts.c.name == bindparam("account"))


class AccountsStore(StoreBase):
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
                # Where its new tasks run; None = the service's default (docs/kling-engine.md).
                "engine": row["engine"],
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

"""Kling's own API (``/v1``): access key / secret key pairs, and the page of an account's
lip-sync tasks that Kling's list endpoint shows.

A secret key must be known to the server to check an HS256 signature, so it cannot be
hashed like an API key. It is not stored at all: it is HMAC-SHA256 of the access key under
the service's signing key (``LIPDUB_SIGNING_KEY`` or ``<data dir>/signing.key``). A copy
of the database alone yields no secret; the signing key alone names no access key. The
row keeps a SHA-256 of the derived secret, so a token signed before the signing key was
changed is told apart (and logged) from a forged one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy import insert, select, update

from lipdub.service.store import tables as t
from lipdub.service.store.base import Row, StoreBase, UnknownAccount
from lipdub.service.store.db import now_ms

# Versioned: a different derivation later must not accept the old secrets by accident.
_CONTEXT = b"lipdub kling secret key v1\x00"


def derive_secret(master: bytes, access_key: str) -> str:
    """The secret key of ``access_key`` under the signing key ``master`` (43 characters)."""
    mac = hmac.new(master, _CONTEXT + access_key.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def secret_check(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KlingStore(StoreBase):
    def create_kling_key(self, account: str, master: bytes) -> tuple[str, str]:
        """A new (access key, secret key) pair of an existing ``account``; the secret is
        returned once and never stored."""
        access_key = secrets.token_hex(16)  # 32 characters, as Kling's access keys
        secret = derive_secret(master, access_key)
        with self.engines.write.begin() as conn:
            found = conn.execute(select(t.accounts.c.name).where(t.accounts.c.name == account))
            if found.first() is None:
                raise UnknownAccount(account)
            conn.execute(
                insert(t.kling_keys).values(
                    access_key=access_key,
                    account=account,
                    secret_check=secret_check(secret),
                    created_ms=now_ms(),
                )
            )
        return access_key, secret

    def kling_key(self, access_key: str) -> Row | None:
        """The pair's row if the access key exists and is not revoked."""
        c = t.kling_keys.c
        with self.engines.read.connect() as conn:
            q = select(t.kling_keys).where(c.access_key == access_key, c.revoked_ms.is_(None))
            return conn.execute(q).mappings().first()

    def revoke_kling_key(self, access_key: str) -> Row | None:
        """Revoke a pair (its tokens answer 401 at once); its row as it was, or None."""
        c = t.kling_keys.c
        with self.engines.write.begin() as conn:
            row = conn.execute(select(t.kling_keys).where(c.access_key == access_key))
            found = row.mappings().first()
            if found is not None and found["revoked_ms"] is None:
                conn.execute(
                    update(t.kling_keys).where(c.access_key == access_key).values(
                        revoked_ms=now_ms()
                    )
                )
            return found

    def tasks_page(self, account: str, model: str, offset: int, limit: int) -> list[Row]:
        """The account's tasks of ``model``, newest first, by page number (Kling's list
        pages by number, not cursor)."""
        c = t.tasks.c
        q = (
            select(t.tasks)
            .where(c.account == account, c.model == model)
            .order_by(c.create_ms.desc(), c.id.desc())
            .offset(offset)
            .limit(limit)
        )
        with self.engines.read.connect() as conn:
            return list(conn.execute(q).mappings())

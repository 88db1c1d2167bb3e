"""Start-up checks: what every process of a fleet must agree on, verified before it works.

A worker with its own data directory used to start, fail identify with a server path in
the message, fail lip-sync with a misleading ``session_expired`` and, failing fastest,
take most of the queue. Now every process checks, before serving or claiming anything:

- the database schema is at the revision this code expects (older: migrated, as the
  embedded default always did; newer: refused, see ``db.NewerDatabase``);
- the media storage is reachable, and is the fleet's: the API writes a marker object
  (``fleet/marker``, a random id) and records the id in the database; a process whose
  storage lacks that marker or holds another is looking at a different place;
- the signing key is the fleet's (its fingerprint is recorded the same way), so links
  signed by a worker open on the API;
- the public URL is set (not the loopback default on a worker) and the same.

The API records (it defines the fleet); workers verify. A mismatch is one line on
stderr and exit status 2, e.g. ``fleet check failed: storage file:///... is not the
fleet's storage (...): point LIPDUB_STORAGE_URL at the API's bucket or directory``.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Protocol

from lipdub.config import Settings
from lipdub.service.storage import MissingObject, Storage, StorageUnavailable
from lipdub.service.store import Store
from lipdub.service.store.db import current_revision, head_revision

MARKER_KEY = "fleet/marker"
LOOPBACK_DEFAULT = Settings.public_url


class Context(Protocol):
    """What the check reads of ``lipdub.service.context.Context`` (which sits above this
    package and is passed in whole)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def storage(self) -> Storage: ...


class FleetMismatch(Exception):
    """The one line that says what differs and what to set."""


def key_fingerprint(secret: bytes) -> str:
    return hmac.new(secret, b"lipdub fleet signing key", hashlib.sha256).hexdigest()[:16]


def _read_marker(ctx: Context) -> str | None:
    try:
        return ctx.storage.get_bytes(MARKER_KEY).decode().strip()
    except MissingObject:
        return None
    except StorageUnavailable as e:
        raise FleetMismatch(f"storage {ctx.storage.url} is unreachable ({e}): check "
                            "LIPDUB_STORAGE_URL and the AWS_* variables.") from None


def check_schema(ctx: Context) -> None:
    current, head = current_revision(ctx.store.engines), head_revision()
    if current != head:
        raise FleetMismatch(
            f"the database is at schema revision {current}, this lipdub needs {head}: run "
            "'lipdub db upgrade'."
        )


def record(ctx: Context) -> None:
    """API start: make this process's storage, key and public URL the fleet's."""
    check_schema(ctx)
    marker = _read_marker(ctx)
    if marker is None:
        marker = uuid.uuid4().hex
        try:
            ctx.storage.put_bytes(MARKER_KEY, marker.encode())
        except StorageUnavailable as e:
            raise FleetMismatch(f"storage {ctx.storage.url} is not writable ({e}).") from None
    ctx.store.set_fleet_config(
        {
            "storage_marker": marker,
            "storage_url": ctx.storage.url,
            "signing_key": key_fingerprint(ctx.settings.secret_key()),
            "public_url": ctx.settings.public_url.rstrip("/"),
        }
    )


def verify(ctx: Context) -> None:
    """Worker start: refuse to run unless this process sees the fleet's storage, signs
    with the fleet's key and hands out the fleet's public URL."""
    check_schema(ctx)
    fleet = ctx.store.fleet_config()
    if not fleet:
        raise FleetMismatch(
            "no API has started on this database yet: start 'lipdub serve' first (it "
            "records the fleet's storage, signing key and public URL)."
        )
    marker = _read_marker(ctx)
    if marker != fleet["storage_marker"]:
        raise FleetMismatch(
            f"storage {ctx.storage.url} is not the fleet's storage ({fleet['storage_url']} "
            "on the API): point LIPDUB_STORAGE_URL at the API's bucket or shared directory."
        )
    if key_fingerprint(ctx.settings.secret_key()) != fleet["signing_key"]:
        raise FleetMismatch(
            "the signing key differs from the API's: set LIPDUB_SIGNING_KEY to the same "
            "value on every machine."
        )
    public = ctx.settings.public_url.rstrip("/")
    if public != fleet["public_url"]:
        hint = " (it is the loopback default)" if public == LOOPBACK_DEFAULT else ""
        raise FleetMismatch(
            f"LIPDUB_PUBLIC_URL is {public!r}{hint}, the API's is {fleet['public_url']!r}: "
            "set the same public URL on every machine (links in callbacks use it)."
        )

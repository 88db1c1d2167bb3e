"""What every part of the service is built from: settings, store, storage, URL policy.

Layer: the composition root, below the API and the worker and above ``callbacks``,
``ops``, ``store`` and ``storage`` (which it wires together: the store gets the callback
wire format here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lipdub.config import Settings
from lipdub.media.fetch import UrlPolicy
from lipdub.service.callbacks.payloads import WIRE
from lipdub.service.ops.disk import DiskGuard
from lipdub.service.storage import Storage, open_storage
from lipdub.service.store import Store


@dataclass(frozen=True)
class Context:
    settings: Settings
    store: Store
    storage: Storage
    policy: UrlPolicy
    disk: DiskGuard
    # This machine's working space (downloads being checked, attempts' inputs and
    # outputs); never shared, and what the disk watermark watches.
    scratch: Path

    @classmethod
    def build(cls, settings: Settings, store: Store | None = None) -> Context:
        store = store or Store.open(settings.effective_database_url, callbacks=WIRE)
        if store.callbacks is None:  # a store a test (or a tool) opened bare
            store.callbacks = WIRE
        storage = open_storage(
            settings.storage_url, settings.media_dir, settings.public_url, settings.secret_key()
        )
        scratch = settings.scratch_root.resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        policy = UrlPolicy(
            allow_all_private=settings.allows_all_private,
            allowed_networks=settings.allowed_private_networks,
        )
        disk = DiskGuard(scratch, settings.min_free_bytes)
        return cls(settings, store, storage, policy, disk, scratch)

    @property
    def retention_ms(self) -> int:
        return int(self.settings.result_retention_s * 1000)

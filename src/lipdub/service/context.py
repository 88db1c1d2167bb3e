"""What every part of the service is built from: settings, store, storage, URL policy."""

from __future__ import annotations

from dataclasses import dataclass

from lipdub.config import Settings
from lipdub.media.fetch import UrlPolicy
from lipdub.service.disk import DiskGuard
from lipdub.service.storage import LocalStorage
from lipdub.service.store import Store


@dataclass(frozen=True)
class Context:
    settings: Settings
    store: Store
    storage: LocalStorage
    policy: UrlPolicy
    disk: DiskGuard

    @classmethod
    def build(cls, settings: Settings, store: Store | None = None) -> Context:
        store = store or Store.open(settings.effective_database_url)
        storage = LocalStorage(settings.media_dir, settings.public_url, settings.secret_key())
        policy = UrlPolicy(
            allow_all_private=settings.allows_all_private,
            allowed_networks=settings.allowed_private_networks,
        )
        disk = DiskGuard(storage.root, settings.min_free_bytes)
        return cls(settings, store, storage, policy, disk)

    @property
    def retention_ms(self) -> int:
        return int(self.settings.result_retention_s * 1000)

"""``Store``: the one facade over the service's state, composed of one class per area.

Each area's module holds its SQL: ``accounts`` (keys, balances, ledger), ``queue``
(submit, claim, leases), ``finish`` (complete, fail, cancel), ``tasks`` (reads for the
API), ``outbox`` (callback deliveries), ``uploads``, ``stats`` (metrics, retention),
``fleet``, ``kling`` (Kling's access key pairs, its list page), ``upstream`` (each
account's engine, upstream task records) and ``limits`` (request rate and download slots
over every API process); ``base`` what they share. Callers hold a ``Store`` and never a
part of it.
"""

from __future__ import annotations

from lipdub.service.store.accounts import AccountsStore
from lipdub.service.store.fleet import FleetStore
from lipdub.service.store.kling import KlingStore
from lipdub.service.store.limits import LimitsStore
from lipdub.service.store.queue import QueueStore
from lipdub.service.store.stats import StatsStore
from lipdub.service.store.uploads import UploadsStore
from lipdub.service.store.upstream import UpstreamStore


class Store(QueueStore, AccountsStore, KlingStore, UploadsStore, StatsStore, FleetStore,
            UpstreamStore, LimitsStore):
    """Every read and write of the service's state, over SQLite and PostgreSQL alike."""

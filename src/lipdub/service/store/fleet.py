"""The fleet's shared configuration (storage, signing key fingerprint, public URL) that
the API records and every worker checks at start (see ops/fleetcheck.py)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import insert, select

from lipdub.service.store import tables as t
from lipdub.service.store.base import StoreBase


class FleetStore(StoreBase):
    def fleet_config(self) -> dict[str, str]:
        with self.engines.read.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(select(t.fleet_config))}

    def set_fleet_config(self, values: Mapping[str, str]) -> None:
        with self.engines.write.begin() as conn:
            for key, value in values.items():
                conn.execute(t.fleet_config.delete().where(t.fleet_config.c.key == key))
                conn.execute(insert(t.fleet_config).values(key=key, value=value))

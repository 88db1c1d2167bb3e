"""The database check behind ``/healthz``: an answer within a second, whatever the database does.

A probe is one ``SELECT 1`` on its own small engine (short connect and statement
timeouts), run on a thread of its own. ``healthy()`` waits at most ``timeout_s`` for it:
a database that refuses answers at once, one that hangs is reported unreachable after
``timeout_s`` while the probe thread runs out its own timeouts. At most one probe is in
flight, so a load balancer polling a hung database does not pile up threads, and a
result younger than ``fresh_s`` is reused, so polling costs one query per ``fresh_s``.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, create_engine, text

from lipdub.service.store.db import pg_connect_args, pg_url


class HealthProbe:
    def __init__(self, database_url: str, fresh_s: float = 0.5) -> None:
        self.fresh_s = fresh_s
        self._engine = self._make_engine(database_url)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()
        self._ok = False
        self._checked = -1e9
        self.error = ""

    @staticmethod
    def _make_engine(url: str) -> Engine:
        if url.startswith("sqlite"):
            return create_engine(url, connect_args={"check_same_thread": False, "timeout": 1})
        return create_engine(
            pg_url(url),
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args=pg_connect_args(url, connect_timeout_s=1, statement_timeout_ms=1000),
        )

    def _probe(self) -> None:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            ok, error = True, ""
        except Exception as e:
            ok, error = False, type(e).__name__
            self._engine.dispose()  # a broken pooled connection must not be reused
        with self._lock:
            self._ok, self.error, self._checked = ok, error, time.monotonic()
        self._done.set()

    def healthy(self, timeout_s: float = 0.8) -> bool:
        with self._lock:
            if time.monotonic() - self._checked < self.fresh_s:
                return self._ok
            if self._done.is_set():
                self._done.clear()
                threading.Thread(target=self._probe, name="health-probe", daemon=True).start()
        if not self._done.wait(timeout_s):
            self.error = "no answer within the health check's deadline"
            return False
        return self._ok

    def close(self) -> None:
        self._engine.dispose()

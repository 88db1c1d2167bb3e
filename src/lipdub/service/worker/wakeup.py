"""Waking idle workers when a task arrives (PostgreSQL LISTEN/NOTIFY), as pg-boss and
Procrastinate do, instead of each worker finding it on its next poll.

A submission's transaction runs ``NOTIFY lipdub_tasks`` (delivered at commit, dropped on
rollback, see store/queue.py). Each worker process keeps one extra connection that LISTENs and
wakes its slots. The poll stays as the safety net: a notification lost while the
listener reconnects delays a task by one poll interval, never more. SQLite has no
notifications; there the API wakes its embedded workers directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from lipdub.service.retry import BurstLog
from lipdub.service.store import TASKS_CHANNEL
from lipdub.service.store.db import pg_connect_args

log = logging.getLogger("lipdub.wakeup")


class TaskListener:
    def __init__(self, database_url: str, on_task: Callable[[], None]) -> None:
        self.database_url = database_url
        self.on_task = on_task
        self._stop = threading.Event()
        self._errors = BurstLog(log, "listening for new tasks")
        self._thread: threading.Thread | None = None

    @staticmethod
    def applies(database_url: str) -> bool:
        return database_url.startswith(("postgresql", "postgres"))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="task-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as e:
                self._errors.failed(e)
                self._stop.wait(1.0)

    def _listen(self) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url.replace("+psycopg", ""))
        args = pg_connect_args(self.database_url, statement_timeout_ms=0)
        with psycopg.connect(
            host=url.host or "localhost", port=url.port or 5432, user=url.username,
            password=url.password, dbname=url.database, autocommit=True, **args,
        ) as conn:
            conn.execute(f"LISTEN {TASKS_CHANNEL}")
            self._errors.ok()
            self.on_task()  # tasks submitted while we were not listening
            while not self._stop.is_set():
                # The timeout lets stop() end the loop; each batch wakes the slots once.
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    self.on_task()

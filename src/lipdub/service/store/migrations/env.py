"""Alembic environment, for both ways of running the migrations.

- ``lipdub.service.store.db.migrate`` (start-up and ``lipdub db``) hands over a connection in
  ``config.attributes["connection"]``, already holding the migration lock.
- Plain ``alembic -c src/lipdub/service/store/alembic.ini upgrade head`` has none: the URL
  comes from ``-x url=...``, else ``LIPDUB_DATABASE_URL``, else the ini's
  ``sqlalchemy.url``, and the engine is built like the service's (same timeouts).
"""

from __future__ import annotations

import os

from alembic import context

from lipdub.service.store.db import make_engines


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        render_as_batch=connection.dialect.name == "sqlite",  # type: ignore[attr-defined]
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("LIPDUB_DATABASE_URL")
        or context.config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise SystemExit(
            "no database URL: pass -x url=..., set LIPDUB_DATABASE_URL, or set "
            "sqlalchemy.url in alembic.ini."
        )
    engines = make_engines(url)
    try:
        with engines.write.begin() as conn:
            _run(conn)
    finally:
        engines.dispose()

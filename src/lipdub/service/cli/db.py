"""``lipdub db upgrade|downgrade|current``: run the schema migrations explicitly.

Processes still bring an older schema up to date when they start (the embedded default
needs no extra step); these commands are for fleets that migrate as a deployment step
(before rolling out a new version) or need to step back (``downgrade`` before installing
an older lipdub, which refuses a schema newer than it knows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from lipdub.config import Settings

DbUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides LIPDUB_DATABASE_URL.", show_default=False),
]


def register(
    app: typer.Typer, settings_of: Callable[..., Settings], fail: Callable[[str], typer.Exit]
) -> None:
    db = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
    app.add_typer(db, name="db")

    def engines(database_url: str | None) -> Any:
        from lipdub.service.store.db import make_engines

        return make_engines(settings_of(database_url=database_url).effective_database_url)

    def run(database_url: str | None, target: str, downgrade: bool) -> None:
        from lipdub.service.store.db import NewerDatabase, current_revision, migrate

        e = engines(database_url)
        try:
            before = current_revision(e)
            migrate(e, target, downgrade=downgrade)
            after = current_revision(e)
        except NewerDatabase as err:
            raise fail(str(err)) from None
        finally:
            e.dispose()
        typer.echo(f"schema revision {before or 'none'} -> {after or 'none'}")

    @db.command("upgrade")
    def upgrade(
        revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
        database_url: DbUrl = None,
    ) -> None:
        """Migrate the schema up to REVISION (default: the newest this lipdub knows)."""
        run(database_url, revision, downgrade=False)

    @db.command("downgrade")
    def downgrade(
        revision: Annotated[str, typer.Argument(help="Target revision, e.g. 0002 or -1.")],
        database_url: DbUrl = None,
    ) -> None:
        """Migrate the schema down to REVISION (stop every process of the fleet first)."""
        run(database_url, revision, downgrade=True)

    @db.command("current")
    def current(database_url: DbUrl = None) -> None:
        """Print the schema revision of the database and the newest this lipdub knows."""
        from lipdub.service.store.db import current_revision, head_revision

        e = engines(database_url)
        try:
            rev = current_revision(e)
        finally:
            e.dispose()
        typer.echo(f"database: {rev or 'none'}  this lipdub: {head_revision()}")

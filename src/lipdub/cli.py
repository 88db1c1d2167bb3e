"""The ``lipdub`` command line (minimal: the vision side merges its commands in here)."""

from __future__ import annotations

import typer

from lipdub.service.cli import register

app = typer.Typer(no_args_is_help=True)
register(app)


def main() -> None:
    app()

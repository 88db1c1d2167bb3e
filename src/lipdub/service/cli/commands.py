"""Service commands: ``serve``, ``worker``, ``keys create``, ``credits add``, ``account``.

``register(app)`` adds them to the main Typer app in ``lipdub.cli``.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lipdub.config import Settings

console = Console()
# soft_wrap: an error stays one line, however narrow the terminal (or none, under CI).
err = Console(stderr=True, soft_wrap=True)
# Money is stored as integer micro-dollars in a signed 64-bit column; one amount of at
# most a billion dollars leaves room for any sane balance.
MAX_USD = Decimal(1_000_000_000)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Overrides LIPDUB_DATA_DIR.", show_default=False)
]
DbUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides LIPDUB_DATABASE_URL.", show_default=False),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(overrides)
    except ValueError as e:
        raise _fail(str(e)) from None


def _micros(usd: str) -> int:
    """A USD amount as integer micro-dollars; anything else is a one-line error."""
    try:
        value = Decimal(usd.strip())
    except InvalidOperation:
        raise _fail(f"{usd!r} is not an amount in USD: write e.g. 10 or 0.25.") from None
    if not value.is_finite():
        raise _fail(f"{usd!r} is not a finite amount in USD: write e.g. 10 or 0.25.")
    if value < 0:
        raise _fail(f"The amount {usd} is negative: give 0 or more USD.")
    if value > MAX_USD:
        raise _fail(f"The amount {usd} is above the {MAX_USD:,} USD limit: give a smaller one.")
    micros = value * 1_000_000
    if micros != micros.to_integral_value():
        raise _fail(f"The amount {usd} has more than 6 decimals: money is kept in micro-dollars.")
    return int(micros)


def _when(ms: int | None) -> str:
    """Epoch milliseconds as a readable UTC time (the store keeps ms)."""
    if ms is None:
        return ""
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _warn_split(settings: Settings, role: str) -> None:
    from lipdub.service.cli.firstrun import split_warnings

    for line in split_warnings(settings):
        err.print(f"WARNING ({role}): {line}", style="bold yellow", markup=False, highlight=False)


def _store(settings: Settings) -> Any:
    from lipdub.service.store import Store

    return Store.open(settings.effective_database_url)


def _checked(build: Any) -> Any:
    """Start-up that refuses with one line (exit 2) when the fleet does not match."""
    from lipdub.service.api.shared_limits import LimitsUnavailable
    from lipdub.service.ops.fleetcheck import FleetMismatch
    from lipdub.service.store.db import NewerDatabase

    try:
        return build()
    except (FleetMismatch, NewerDatabase) as e:
        raise _fail(f"fleet check failed: {e}") from None
    except LimitsUnavailable as e:
        raise _fail(f"limits store: {e}") from None
    except ValueError as e:  # a malformed LIPDUB_STORAGE_URL and the like
        raise _fail(str(e)) from None


def _listen(host: str, port: int) -> Any:
    """The server's listening socket, bound before anything says it listens: a port in
    use (or a host that is not this machine's) is one line and exit 2, not a "listening"
    line followed by uvicorn's bind error."""
    import errno
    import socket

    # As uvicorn would bind it: IPv6 for an address with ':', IPv4 otherwise.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, UnicodeError, OverflowError) as e:
        sock.close()
        if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
            raise _fail(
                f"Port {port} on {host} is already in use (another lipdub serve?): stop that "
                f"server, or choose another port: lipdub serve --port {port + 1} (make run "
                f"PORT={port + 1})."
            ) from None
        why = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).rstrip(".")
        raise _fail(f"Cannot listen on {host}:{port} ({why}): give an address of this "
                    "machine with --host and a port from 1 to 65535 with --port.") from None
    sock.set_inheritable(True)
    return sock


def _fleet_context(settings: Settings, check: Any) -> Any:
    from lipdub.service.context import Context

    ctx = Context.build(settings)
    if settings.fleet_check:
        check(ctx)
    return ctx


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="API keys.", no_args_is_help=True)
    credits = typer.Typer(help="Account credits.", no_args_is_help=True)
    account = typer.Typer(help="Accounts.", no_args_is_help=True)
    app.add_typer(keys, name="keys")
    app.add_typer(credits, name="credits")
    app.add_typer(account, name="account")
    from lipdub.service.cli import db as dbcli

    dbcli.register(app, _settings, _fail)

    @app.command()
    def serve(
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        data_dir: DataDir = None,
        database_url: DbUrl = None,
        public_url: Annotated[
            str | None, typer.Option(help="Base of URLs handed out; default http://HOST:PORT.")
        ] = None,
        workers: Annotated[
            int | None, typer.Option(help="In-process task workers (0: API only).")
        ] = None,
        dev_key: Annotated[
            bool,
            typer.Option(
                "--dev-key",
                help="First start of a development install (make run): if the store has no "
                "key, create one with $5 and print it with a curl walk-through.",
            ),
        ] = False,
    ) -> None:
        """Run the HTTP API with in-process workers (the embedded default)."""
        import os

        import uvicorn

        from lipdub.service.api.app import create_app

        default_public = f"http://{host}:{port}"
        if "LIPDUB_PUBLIC_URL" in os.environ and public_url is None:
            default_public = None  # type: ignore[assignment]
        settings = _settings(
            data_dir=data_dir,
            database_url=database_url,
            public_url=public_url or default_public,
            workers=workers,
        )
        sock = _listen(host, port)  # a busy port is refused before anything else is said
        app_ = _checked(lambda: create_app(settings))  # before logging: a refusal is 1 line
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        if settings.workers == 0:
            _warn_split(settings, "serve --workers 0")
        from lipdub.service.cli.firstrun import banner, dev_key_if_first_start

        key = dev_key_if_first_start(app_.state.ctx.store) if dev_key else None
        url = f"http://{host}:{port}"
        private_allowed = settings.allows_all_private or bool(settings.allowed_private_networks)
        print(banner(url, key, settings.data_dir.resolve(), private_allowed) if dev_key else
              f"lipdub listening on {url}  (API docs: {url}/docs)", flush=True)
        config = uvicorn.Config(app_, host=host, port=port, access_log=False,
                                log_level="warning")
        uvicorn.Server(config).run(sockets=[sock])

    @app.command()
    def worker(
        data_dir: DataDir = None,
        database_url: DbUrl = None,
        workers: Annotated[int | None, typer.Option(help="Concurrent tasks.")] = None,
    ) -> None:
        """Run task workers and callback delivery alone, on the API's database and storage."""
        from lipdub.service.ops.fleetcheck import verify
        from lipdub.service.worker import Worker

        settings = _settings(data_dir=data_dir, database_url=database_url, workers=workers)
        # A refusal is one line (what to fix); the warnings are for a worker that may run.
        ctx = _checked(lambda: _fleet_context(settings, verify))
        _warn_split(settings, "lipdub worker")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        w = Worker(ctx, slots=max(settings.workers, 1))
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        w.start()
        console.print(f"worker {w.name}: {w.slots} slot(s); Ctrl-C stops")
        stop.wait()
        w.stop()

    @keys.command("create")
    def keys_create(
        account_name: Annotated[str, typer.Argument(metavar="ACCOUNT")],
        credits_usd: Annotated[
            str, typer.Option("--credits", help="Initial credits in USD (new accounts).")
        ] = "0",
        add_key: Annotated[
            bool,
            typer.Option("--add-key", help="The account exists: give it one more key."),
        ] = False,
        data_dir: DataDir = None,
        database_url: DbUrl = None,
    ) -> None:
        """Create an account and its API key; the key is printed once, last line."""
        from lipdub.service.store import AccountExists

        micros = _micros(credits_usd)
        if add_key and micros:
            raise _fail(
                f"--add-key adds a key, not money: run 'lipdub credits add {account_name} "
                f"{credits_usd}' for the credits."
            )
        store = _store(_settings(data_dir=data_dir, database_url=database_url))
        try:
            key = store.create_key(account_name, micros, add_key=add_key)
        except AccountExists:
            raise _fail(
                f"Account {account_name!r} exists: add a key with 'lipdub keys create "
                f"{account_name} --add-key', credits with 'lipdub credits add'.",
                1,
            ) from None
        console.print(
            f"Created a key for account {account_name!r}; store it now, it is not shown again:"
        )
        print(key)

    @keys.command("list")
    def keys_list(
        account_name: Annotated[
            str | None, typer.Argument(metavar="[ACCOUNT]", help="Only this account's keys.")
        ] = None,
        data_dir: DataDir = None,
        database_url: DbUrl = None,
    ) -> None:
        """Every key's prefix, account and state (the keys themselves are not stored)."""
        store = _store(_settings(data_dir=data_dir, database_url=database_url))
        table = Table("prefix", "account", "created", "revoked")
        for k in store.list_keys(account_name):
            table.add_row(k["prefix"], k["account"], _when(k["created_ms"]), _when(k["revoked_ms"]))
        console.print(table)

    @keys.command("revoke")
    def keys_revoke(
        key: Annotated[str, typer.Argument(metavar="KEY_OR_PREFIX")],
        data_dir: DataDir = None,
        database_url: DbUrl = None,
    ) -> None:
        """Revoke a key, given whole or by the prefix 'keys list' shows; it answers 401 at once."""
        store = _store(_settings(data_dir=data_dir, database_url=database_url))
        found = store.revoke_key(key.strip())
        if not found:
            raise _fail(f"No key matches {key!r}: see 'lipdub keys list'.", 1)
        if len(found) > 1:
            raise _fail(f"{len(found)} keys start with {key!r}: give the whole key.", 1)
        k = found[0]
        state = "was already revoked" if k["revoked_ms"] is not None else "is revoked"
        console.print(f"Key {k['prefix']} of account {k['account']!r} {state}.")

    @keys.command("kling")
    def keys_kling(
        account_name: Annotated[str, typer.Argument(metavar="ACCOUNT")],
        data_dir: DataDir = None,
        database_url: DbUrl = None,
    ) -> None:
        """An access key / secret key pair for Kling's own API (/v1, docs/kling.md),
        printed once as 'access_key=...' and 'secret_key=...' on the last two lines."""
        from lipdub.service.store import UnknownAccount

        settings = _settings(data_dir=data_dir, database_url=database_url)
        store = _store(settings)
        try:
            access_key, secret = store.create_kling_key(account_name, settings.secret_key())
        except UnknownAccount:
            raise _fail(
                f"No account {account_name!r}: create it first with 'lipdub keys create "
                f"{account_name}'.",
                1,
            ) from None
        console.print(
            f"Kling access key pair for account {account_name!r}; store the secret key now, "
            "it is not shown again:"
        )
        print(f"access_key={access_key}")
        print(f"secret_key={secret}")

    @keys.command("kling-revoke")
    def keys_kling_revoke(
        access_key: Annotated[str, typer.Argument(metavar="ACCESS_KEY")],
        data_dir: DataDir = None,
        database_url: DbUrl = None,
    ) -> None:
        """Revoke a Kling access key pair; its tokens answer 401 (code 1000) at once."""
        store = _store(_settings(data_dir=data_dir, database_url=database_url))
        found = store.revoke_kling_key(access_key.strip())
        if found is None:
            raise _fail(f"No Kling access key {access_key!r}.", 1)
        state = "was already revoked" if found["revoked_ms"] is not None else "is revoked"
        console.print(f"Kling access key {access_key} of account {found['account']!r} {state}.")

    @credits.command("add")
    def credits_add(
        account_name: Annotated[str, typer.Argument(metavar="ACCOUNT")],
        usd: Annotated[str, typer.Argument(metavar="USD")],
        data_dir: DataDir = None,
        database_url: DbUrl = None,
    ) -> None:
        """Add credits (USD) to an account."""
        from lipdub.service.store import UnknownAccount

        micros = _micros(usd)
        store = _store(_settings(data_dir=data_dir, database_url=database_url))
        try:
            balance = store.add_credits(account_name, micros)
        except UnknownAccount:
            raise _fail(
                f"No account {account_name!r}: create it with 'lipdub keys create {account_name}'.",
                1,
            ) from None
        console.print(f"{account_name}: balance ${balance / 1e6:.6f}")

    @account.command("show")
    def account_show(
        account_name: Annotated[str, typer.Argument(metavar="ACCOUNT")],
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        data_dir: DataDir = None,
        database_url: DbUrl = None,
    ) -> None:
        """Balance, reserved money and the recent ledger of an account."""
        from lipdub.service.store import UnknownAccount

        store = _store(_settings(data_dir=data_dir, database_url=database_url))
        try:
            summary = store.account_summary(account_name)
        except UnknownAccount:
            raise _fail(
                f"No account {account_name!r}: create it with 'lipdub keys create {account_name}'.",
                1,
            ) from None
        if as_json:
            print(json.dumps(summary))
            return
        console.print(
            f"[bold]{account_name}[/bold]: balance ${summary['balance_micros'] / 1e6:.6f}, "
            f"reserved ${summary['reserved_micros'] / 1e6:.6f}, signed callbacks: "
            f"{'on' if summary['webhook_signing'] else 'off'}"
        )
        table = Table("when", "kind", "amount $", "balance $", "task")
        for e in summary["ledger"]:
            table.add_row(
                _when(e["created_ms"]),
                e["kind"],
                f"{e['amount_micros'] / 1e6:.6f}",
                f"{e['balance_after'] / 1e6:.6f}",
                e["task_id"] or "",
            )
        console.print(table)

    @account.command("engine")
    def account_engine(
        account_name: Annotated[str, typer.Argument(metavar="ACCOUNT")],
        engine: Annotated[
            str | None,
            typer.Argument(
                metavar="[local|kling|default]",
                help="Engine of the account's new tasks; 'default' follows "
                "LIPDUB_DEFAULT_ENGINE. Without it, show the current choice.",
            ),
        ] = None,
        data_dir: DataDir = None,
        database_url: DbUrl = None,
    ) -> None:
        """Choose where an account's new tasks run: lipdub's CPU engine or Kling's cloud.
        A lip-sync always runs where its session was identified."""
        from lipdub.config import ENGINES
        from lipdub.service.store import UnknownAccount

        settings = _settings(data_dir=data_dir, database_url=database_url)
        store = _store(settings)
        if engine is not None and engine not in (*ENGINES, "default"):
            raise _fail(f"Unknown engine {engine!r}: use one of {', '.join(ENGINES)} or default.")
        try:
            if engine is not None:
                store.set_account_engine(account_name, None if engine == "default" else engine)
            if not store.account_exists(account_name):
                raise UnknownAccount(account_name)
            chosen = store.account_engine(account_name)
        except UnknownAccount:
            raise _fail(f"No account {account_name!r}: see 'lipdub keys list'.", 1) from None
        if chosen is None:
            console.print(
                f"{account_name}: engine {settings.default_engine} (the default, "
                "LIPDUB_DEFAULT_ENGINE)"
            )
        else:
            console.print(f"{account_name}: engine {chosen}")

    @account.command("webhook-secret")
    def account_webhook_secret(
        account_name: Annotated[str, typer.Argument(metavar="ACCOUNT")],
        disable: Annotated[bool, typer.Option("--disable", help="Send unsigned again.")] = False,
        data_dir: DataDir = None,
        database_url: DbUrl = None,
    ) -> None:
        """Sign the account's callbacks (Standard Webhooks); prints the secret, last line."""
        import base64

        from lipdub.service.store import UnknownAccount

        store = _store(_settings(data_dir=data_dir, database_url=database_url))
        secret = None if disable else "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        try:
            store.set_webhook_secret(account_name, secret)
        except UnknownAccount:
            raise _fail(f"No account {account_name!r}: see 'lipdub keys list'.", 1) from None
        if secret is None:
            console.print(f"{account_name}: callbacks are unsigned.")
        else:
            console.print(f"{account_name}: callbacks are signed with:")
            print(secret)

"""The service's commands, run as a user would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lipdub.service.store import Store

from .helpers import Server


def test_keys_credits_and_account(tmp_path: Path) -> None:
    s = Server(tmp_path / "cli")  # not started: only its environment is used
    out = s.cli("keys", "create", "acme", "--credits", "2.5")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("ld_") and len(key) > 40
    store = Store.open(f"sqlite:///{tmp_path / 'cli' / 'lipdub.db'}")
    assert store.account_for_key(key) == "acme"
    store.close()
    assert s.cli("credits", "add", "acme", "0.000001").returncode == 0
    summary = json.loads(s.cli("account", "show", "acme", "--json").stdout)
    assert summary["balance_micros"] == 2_500_001
    assert [e["kind"] for e in summary["ledger"]] == ["credit", "credit"]
    assert key not in (tmp_path / "cli" / "lipdub.db").read_bytes().decode("latin-1")

    missing = s.cli("credits", "add", "nobody", "1")
    assert missing.returncode == 1 and "lipdub keys create nobody" in missing.stderr
    bad = s.cli("credits", "add", "acme", "ten")
    assert bad.returncode == 2 and "not an amount in USD" in bad.stderr
    secret = s.cli("account", "webhook-secret", "acme")
    assert secret.stdout.strip().splitlines()[-1].startswith("whsec_")
    human = s.cli("account", "show", "acme")
    assert "balance $2.500001" in human.stdout and "signed callbacks: on" in human.stdout


def test_bad_setting_is_reported(tmp_path: Path) -> None:
    s = Server(tmp_path / "bad", env={"LIPDUB_WORKERS": "many"})
    out = subprocess.run(
        [*s.cli_args("serve", "--port", "1")],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "LIPDUB_WORKERS='many' is not a valid int" in out.stderr


def test_money_amounts_are_validated_with_one_line(tmp_path: Path) -> None:
    s = Server(tmp_path / "money")
    assert s.cli("keys", "create", "acme").returncode == 0
    bad = ["nan", "inf", "-Infinity", "-1", "1" * 20, "0.0000001", "ten"]
    runs = [("credits", "add", "acme", "--", amount) for amount in bad]
    runs += [("keys", "create", "b", "--credits", amount) for amount in ("NaN", "1e30")]
    for args in runs:
        out = s.cli(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, (args, out.stderr)
        assert args[-1] in lines[0], lines
    summary = json.loads(s.cli("account", "show", "acme", "--json").stdout)
    assert summary["balance_micros"] == 0 and summary["ledger"] == []
    assert s.cli("credits", "add", "acme", "1000000000").returncode == 0


def test_keys_create_list_and_revoke(tmp_path: Path) -> None:
    s = Server(tmp_path / "keys")
    first = s.cli("keys", "create", "acme", "--credits", "5")
    assert first.returncode == 0
    again = s.cli("keys", "create", "acme", "--credits", "5")
    assert again.returncode == 1 and "--add-key" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    refused = s.cli("keys", "create", "acme", "--add-key", "--credits", "5")
    assert refused.returncode == 2 and "lipdub credits add" in refused.stderr
    second = s.cli("keys", "create", "acme", "--add-key")
    assert second.returncode == 0
    summary = json.loads(s.cli("account", "show", "acme", "--json").stdout)
    assert summary["balance_micros"] == 5_000_000  # credited once

    keys = [out.stdout.strip().splitlines()[-1] for out in (first, second)]
    listing = s.cli("keys", "list").stdout
    assert all(k[:10] in listing for k in keys) and keys[0] not in listing
    assert s.cli("keys", "revoke", keys[0][:10]).returncode == 0
    store = Store.open(f"sqlite:///{tmp_path / 'keys' / 'lipdub.db'}")
    try:
        assert store.account_for_key(keys[0]) is None
        assert store.account_for_key(keys[1]) == "acme"
    finally:
        store.close()
    missing = s.cli("keys", "revoke", "ld_nothing")
    assert missing.returncode == 1 and "keys list" in missing.stderr

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

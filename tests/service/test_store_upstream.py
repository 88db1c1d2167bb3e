"""The store's upstream records and per-account engine, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from lipdub.service.store import Store, UnknownAccount


def test_upstream_records_are_created_then_updated_and_keep_long_ids(store: Store) -> None:
    assert store.upstream("task-1") is None
    store.record_upstream("task-1", "kling", status="submitting", upstream_session_id="9" * 19)
    first = store.upstream("task-1")
    assert first is not None and first["upstream_task_id"] is None
    store.record_upstream("task-1", "kling", upstream_task_id="8" * 19, status="succeed",
                          charge="0.5")
    row = store.upstream("task-1")
    assert row is not None
    # Kling's ids are long digit strings and stay strings, exactly.
    assert (row["upstream_task_id"], row["upstream_session_id"]) == ("8" * 19, "9" * 19)
    assert (row["status"], row["charge"], row["engine"]) == ("succeed", "0.5", "kling")
    assert row["create_ms"] == first["create_ms"] <= row["update_ms"]
    with pytest.raises(ValueError):
        store.record_upstream("task-1", "kling", state="done")


def test_an_accounts_engine_is_its_own_choice_or_the_default(store: Store) -> None:
    store.create_key("acme")
    assert store.account_engine("acme") is None  # the service's default
    store.set_account_engine("acme", "kling")
    assert store.account_engine("acme") == "kling"
    store.set_account_engine("acme", None)
    assert store.account_engine("acme") is None
    with pytest.raises(UnknownAccount):
        store.set_account_engine("nobody", "kling")
    assert store.account_exists("acme") and not store.account_exists("nobody")

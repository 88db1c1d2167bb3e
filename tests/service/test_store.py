"""The store against real SQLite and PostgreSQL: money, leases, outbox."""

from __future__ import annotations

import json
import threading
import time

import pytest

from lipdub.service.store import InsufficientBalance, Store, Submission, new_task_id
from lipdub.service.store.db import now_ms


def sub(
    account: str, price: int = 700, ext: str | None = None, cb: str | None = None
) -> Submission:
    return Submission(
        account=account,
        model="kling-identify-face",
        param={"model": "kling-identify-face"},
        job={},
        price_micros=price,
        callback_url=cb,
        external_task_id=ext,
        task_id=new_task_id(),
    )


def test_migrations_run_twice_and_key_is_hashed(store: Store, db_url: str) -> None:
    again = Store.open(db_url)  # second start-up: no error, same schema
    key = store.create_key("acme", 1_000_000)
    assert again.account_for_key(key) == "acme"
    assert again.account_for_key(key + "x") is None
    with store.engines.read.connect() as conn:
        stored = conn.exec_driver_sql("SELECT key_hash FROM api_keys").scalar()
    assert key not in stored and len(stored) == 64
    again.close()


def test_reserve_settle_refund_ledger(store: Store) -> None:
    store.create_key("acme", 10_000)
    t1, created = store.submit(sub("acme", 3000))
    assert created and t1["state"] == "pending"
    t2, _ = store.submit(sub("acme", 3000))
    summary = store.account_summary("acme")
    assert summary["balance_micros"] == 4000 and summary["reserved_micros"] == 6000

    row = store.claim("w", 10_000, 3)
    assert row is not None and row["id"] == t1["id"]
    assert store.complete(row["id"], row["lease_owner"], {"x": 1}, now_ms(), None)
    row = store.claim("w", 10_000, 3)
    assert row is not None and row["id"] == t2["id"]
    assert store.fail(row["id"], row["lease_owner"], "no_faces", "No faces.", now_ms(), None)

    summary = store.account_summary("acme")
    assert summary["balance_micros"] == 7000 and summary["reserved_micros"] == 0
    kinds = [e["kind"] for e in reversed(summary["ledger"])]
    assert kinds == ["credit", "reserve", "reserve", "settle", "refund"]
    with pytest.raises(InsufficientBalance) as e:
        store.submit(sub("acme", 7001))
    assert e.value.needed == 7001 and e.value.balance == 7000


def test_external_task_id_is_idempotent_and_per_account(store: Store) -> None:
    store.create_key("a", 10_000)
    store.create_key("b", 10_000)
    first, created1 = store.submit(sub("a", 1000, ext="scene-1"))
    again, created2 = store.submit(sub("a", 1000, ext="scene-1"))
    other, created3 = store.submit(sub("b", 1000, ext="scene-1"))
    assert created1 and not created2 and created3
    assert again["id"] == first["id"] and other["id"] != first["id"]
    assert store.account_summary("a")["balance_micros"] == 9000
    assert store.get_task(first["id"], "b") is None  # another account's task is invisible


def test_concurrent_submissions_never_overdraw(store: Store) -> None:
    store.create_key("acme", 10 * 700)
    results: list[str] = []
    lock = threading.Lock()

    def go() -> None:
        try:
            store.submit(sub("acme", 700))
            r = "ok"
        except InsufficientBalance:
            r = "402"
        with lock:
            results.append(r)

    threads = [threading.Thread(target=go) for _ in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count("ok") == 10 and results.count("402") == 40
    s = store.account_summary("acme")
    assert s["balance_micros"] == 0 and s["reserved_micros"] == 7000


def test_lease_expiry_reclaims_then_fails_after_max_attempts(store: Store) -> None:
    store.create_key("acme", 10_000)
    t, _ = store.submit(sub("acme", 700, cb="http://127.0.0.1:9/hook"))
    first = store.claim("dead-worker", 100, 2)
    assert first is not None and first["attempts"] == 1
    assert store.claim("other", 100, 2) is None  # leased: nobody else may take it
    time.sleep(0.15)
    second = store.claim("other", 100, 2)
    assert second is not None and second["id"] == t["id"] and second["attempts"] == 2
    # The first owner lost its lease: its heartbeat and completion are refused.
    assert not store.heartbeat(t["id"], first["lease_owner"], 100, 0.5)
    assert not store.complete(t["id"], first["lease_owner"], {}, now_ms(), None)
    time.sleep(0.15)
    assert store.claim("third", 100, 2) is None  # attempts exhausted: failed instead
    final = store.get_task(t["id"])
    assert final is not None and final["state"] == "failed"
    assert "stopped 2 times" in final["fail_msg"]
    assert store.account_summary("acme")["balance_micros"] == 10_000  # refunded
    delivery = store.delivery_for_task(t["id"])
    assert delivery is not None and json.loads(delivery["body"])["data"]["state"] == "failed"


def test_delivery_claim_is_exclusive_and_records_outcome(store: Store) -> None:
    store.create_key("acme", 10_000)
    t, _ = store.submit(sub("acme", 700, cb="http://127.0.0.1:9/hook"))
    row = store.claim("w", 10_000, 3)
    assert row is not None
    store.complete(t["id"], row["lease_owner"], {}, now_ms(), '{"x":1}')
    d = store.claim_delivery(10_000)
    assert d is not None and d["body"] == '{"x":1}'
    assert store.claim_delivery(10_000) is None
    store.record_delivery(
        d["id"], ok=False, status=500, error="e", attempt_ms=now_ms(), next_ms=now_ms() + 60_000
    )
    assert store.claim_delivery(10_000) is None  # not due yet
    store.record_delivery(
        d["id"], ok=True, status=200, error=None, attempt_ms=now_ms(), next_ms=None
    )
    final = store.delivery_for_task(t["id"])
    assert final is not None and final["state"] == "delivered" and final["attempts"] == 2


def test_concurrent_claimers_never_share_a_task(store: Store) -> None:
    store.create_key("acme", 100_000)
    ids = {store.submit(sub("acme", 700))[0]["id"] for _ in range(20)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (row := store.claim(name, 60_000, 3)) is not None:
            with lock:
                claimed.append(row["id"])

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(claimed) == sorted(ids)  # each task once, none lost

"""Listing, cancelling and spend in the store, on real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

from lipdub.service.store import Store
from lipdub.service.store.db import now_ms

from .test_store import sub


def test_list_pages_newest_first_filters_and_accounts(store: Store) -> None:
    store.create_key("acme", 100_000)
    store.create_key("other", 100_000)
    ids = []
    for _ in range(5):
        ids.append(store.submit(sub("acme"))[0]["id"])
        time.sleep(0.002)  # distinct create_ms; equal ones are ordered by id anyway
    store.submit(sub("other"))
    newest_first = list(reversed(ids))
    page = store.list_tasks("acme", 2)
    assert [r["id"] for r in page] == newest_first[:2]
    last = page[-1]
    page2 = store.list_tasks("acme", 10, (last["create_ms"], last["id"]))
    assert [r["id"] for r in page2] == newest_first[2:]
    # A claimed task is processing: the state filter sees it, the model filter all five.
    claimed = store.claim("w", 10_000, 3)
    assert claimed is not None
    assert [r["id"] for r in store.list_tasks("acme", 10, state="processing")] == [claimed["id"]]
    assert len(store.list_tasks("acme", 10, model="kling-identify-face")) == 5
    assert store.list_tasks("acme", 10, model="kling-advanced-lip-sync") == []


def test_cancel_refunds_queues_the_callback_and_is_final(store: Store) -> None:
    store.create_key("acme", 10_000)
    pending, _ = store.submit(sub("acme", 3000, cb="http://127.0.0.1:9/hook"))
    running, _ = store.submit(sub("acme", 3000))
    claimed = store.claim("w", 10_000, 3)
    assert claimed is not None and claimed["id"] == pending["id"]  # oldest first
    row, cancelled = store.cancel(pending["id"], "acme", "Cancelled.")
    assert cancelled and row is not None and row["state"] == "failed"
    assert row["fail_code"] == "cancelled"
    # The worker that held it has lost it: its heartbeat and completion are refused.
    assert not store.heartbeat(claimed["id"], claimed["lease_owner"], 10_000, 0.5)
    assert not store.complete(claimed["id"], claimed["lease_owner"], {}, now_ms(), None)
    delivery = store.delivery_for_task(pending["id"])
    assert delivery is not None
    assert json.loads(delivery["body"])["data"]["failCode"] == "cancelled"
    # Still-pending task: cancelled too; a finished one is not; another account's is unknown.
    assert store.cancel(running["id"], "acme", "Cancelled.")[1]
    again, cancelled = store.cancel(running["id"], "acme", "Cancelled.")
    assert again is not None and not cancelled
    assert store.cancel(running["id"], "other", "Cancelled.") == (None, False)
    assert store.balances("acme") == (10_000, 0)
    kinds = [e["kind"] for e in store.account_summary("acme")["ledger"]]
    assert kinds[:2] == ["refund", "refund"]


def test_spend_counts_settled_tasks_only(store: Store) -> None:
    store.create_key("acme", 10_000)
    a, _ = store.submit(sub("acme", 700))
    b, _ = store.submit(sub("acme", 700))
    row = store.claim("w", 10_000, 3)
    assert row is not None and store.complete(row["id"], row["lease_owner"], {}, now_ms(), None)
    store.cancel(b["id"], "acme", "Cancelled.")
    spend = store.spend("acme", now_ms() - 60_000)
    assert [(m, micros) for _, m, micros in spend] == [("kling-identify-face", 700)]
    assert a["id"] == row["id"]
    assert store.balances("acme") == (9_300, 0)

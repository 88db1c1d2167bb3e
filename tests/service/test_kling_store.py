"""Kling access key pairs and the Kling view of tasks, against real SQLite and PostgreSQL;
the Kling task id mapping; the callback bodies of tasks submitted through Kling's API."""

from __future__ import annotations

import json

import jwt
import pytest

from lipdub.service.callbacks import kling
from lipdub.service.callbacks.payloads import callback_body_for_failure
from lipdub.service.store import Store, Submission, UnknownAccount, new_task_id
from lipdub.service.store.kling import derive_secret

MASTER = b"signing-key-of-this-test"


def sub(account: str, model: str, via: str | None = None, ext: str | None = None) -> Submission:
    return Submission(
        account=account,
        model=model,
        param={"model": model},
        job={},
        price_micros=100,
        callback_url="http://127.0.0.1:9/hook",
        external_task_id=ext,
        task_id=new_task_id(),
        via=via,
    )


def test_pairs_store_no_secret_and_sign_tokens(store: Store) -> None:
    with pytest.raises(UnknownAccount):
        store.create_kling_key("nobody", MASTER)
    store.create_key("acme", 1000)
    ak, sk = store.create_kling_key("acme", MASTER)
    row = store.kling_key(ak)
    assert row is not None and row["account"] == "acme"
    with store.engines.read.connect() as conn:
        dump = " ".join(str(v) for r in conn.exec_driver_sql("SELECT * FROM kling_keys") for v in r)
    assert ak in dump and sk not in dump  # the secret is derived, never stored
    # the server re-derives the secret from the signing key and verifies a client's JWT
    token = jwt.encode({"iss": ak, "exp": 2**31}, sk, algorithm="HS256")
    claims = jwt.decode(token, derive_secret(MASTER, ak), algorithms=["HS256"])
    assert claims["iss"] == ak
    assert derive_secret(b"another signing key", ak) != sk
    assert store.revoke_kling_key(ak) is not None
    assert store.kling_key(ak) is None
    assert store.revoke_kling_key("0" * 32) is None


def test_tasks_page_is_per_account_and_model_newest_first(store: Store) -> None:
    store.create_key("a", 10_000)
    store.create_key("b", 10_000)
    ids = [store.submit(sub("a", "kling-advanced-lip-sync", "kling"))[0]["id"] for _ in range(3)]
    store.submit(sub("a", "kling-identify-face"))
    store.submit(sub("b", "kling-advanced-lip-sync"))
    page = store.tasks_page("a", "kling-advanced-lip-sync", 0, 2)
    rest = store.tasks_page("a", "kling-advanced-lip-sync", 2, 2)
    got = [r["id"] for r in page + rest]
    assert sorted(got) == sorted(ids) and len(set(got)) == 3
    assert [r["create_ms"] for r in page + rest] == sorted(
        (r["create_ms"] for r in page + rest), reverse=True
    )
    assert {r["via"] for r in page + rest} == {"kling"}
    assert store.tasks_page("b", "kling-advanced-lip-sync", 0, 10)[0]["via"] is None


def test_kling_ids_map_both_ways_exactly() -> None:
    for _ in range(200):
        task_id = new_task_id()
        kid = kling.kling_id(task_id)
        assert kid is not None and kid.isdigit()
        assert kling.lipdub_id(kid) == task_id
    assert kling.kling_id("cl" + "0" * 32) == "0" and kling.lipdub_id("0") == "cl" + "0" * 32
    assert kling.lipdub_id(str(16**32)) is None  # past 128 bits: names no task
    assert kling.lipdub_id("12a") is None and kling.lipdub_id("١٢") is None  # non-ASCII digits
    assert kling.kling_id("task-1") is None


def test_failure_callbacks_keep_the_shape_of_the_api_used(store: Store) -> None:
    store.create_key("a", 10_000)
    via_kling, _ = store.submit(sub("a", "kling-advanced-lip-sync", "kling", ext="e1"))
    via_contract, _ = store.submit(sub("a", "kling-advanced-lip-sync"))
    k = json.loads(callback_body_for_failure(via_kling, "no_faces", "No face.", 1_800_000_000_000))
    assert k == {
        "task_id": kling.kling_id(via_kling["id"]),
        "task_status": "failed",
        "task_status_msg": "No face.",
        "task_info": {"external_task_id": "e1"},
        "created_at": via_kling["create_ms"],
        "updated_at": 1_800_000_000_000,
        "task_result": {"videos": []},
    }
    c = json.loads(callback_body_for_failure(via_contract, "no_faces", "No face.", 1))
    assert c["code"] == 200 and c["data"]["taskId"] == via_contract["id"]
    assert c["data"]["failCode"] == "no_faces"

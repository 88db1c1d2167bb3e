"""Callback delivery from the outbox to a real HTTP receiver: schedule, signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from lipdub.config import Settings
from lipdub.service.callbacks.payloads import callback_body_for_success
from lipdub.service.callbacks.sender import CallbackDispatcher
from lipdub.service.context import Context
from lipdub.service.store import Store, Submission, new_task_id
from lipdub.service.store.db import now_ms

from .helpers import Receiver


def make_ctx(tmp_path: Path, url: str | None = None, **settings: Any) -> Context:
    s = Settings(
        data_dir=tmp_path / "data",
        public_url="http://127.0.0.1:9",
        allow_private_urls="127.0.0.1/32",
        **settings,
    )
    return Context.build(s, Store.open(url or f"sqlite:///{tmp_path / 'cb.db'}"))


def finish_task_with_callback(ctx: Context, callback_url: str, account: str = "acme") -> str:
    """A task that completed and queued its callback, as a worker would leave it."""
    ctx.store.create_key(account, 10_000)
    task_id = new_task_id()
    ctx.store.submit(
        Submission(
            account,
            "kling-advanced-lip-sync",
            {"model": "kling-advanced-lip-sync"},
            {},
            6300,
            callback_url,
            None,
            task_id,
        )
    )
    row = ctx.store.claim("w", 60_000, 3)
    assert row is not None
    result = {"result_key": f"tasks/{task_id}/result.mp4", "videoDuration": 5.04}
    done = now_ms()
    body = callback_body_for_success(row, result, ctx.storage, done, ctx.retention_ms)
    assert ctx.store.complete(task_id, row["lease_owner"], result, done, body)
    return task_id


def test_quick_retries_follow_1_2_4_seconds(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    recv = Receiver(statuses=[500, 503, 404])
    task_id = finish_task_with_callback(ctx, recv.url)
    d = CallbackDispatcher(ctx)
    d.start()
    try:
        hits = recv.wait(4, timeout=15)
    finally:
        d.stop()
        recv.close()
    gaps = [b.at - a.at for a, b in zip(hits, hits[1:], strict=False)]
    for gap, want in zip(gaps, [1.0, 2.0, 4.0], strict=True):
        assert want - 0.05 <= gap <= want + 0.4, gaps
    assert len({h.body for h in hits}) == 1  # the same bytes on every attempt
    final = ctx.store.delivery_for_task(task_id)
    assert final is not None and final["state"] == "delivered" and final["attempts"] == 4


def test_resend_schedule_then_give_up_with_time_scale(tmp_path: Path) -> None:
    scale = 0.003  # 30 minutes become 5.4 s
    ctx = make_ctx(tmp_path, callback_time_scale=scale)
    recv = Receiver(statuses=[500] * 100)
    task_id = finish_task_with_callback(ctx, recv.url)
    d = CallbackDispatcher(ctx)
    d.start()
    try:
        hits = recv.wait(10, timeout=10)
        # Nothing after the 30-minute mark: wait a scaled minute more and count again.
        time.sleep(120 * scale + 0.3)
    finally:
        d.stop()
        recv.close()
    assert len(recv.hits) == 10
    offsets = [h.at - hits[0].at for h in hits]
    # Quick retries (1, 2, 4 s scaled to ms) are within the attempts' own latency here;
    # the re-sends are at fixed offsets from the first attempt.
    assert offsets[1] < offsets[2] < offsets[3] < 60 * scale
    want = [60, 120, 300, 600, 1200, 1800]
    for got, w in zip(offsets[4:], want, strict=True):
        assert abs(got - w * scale) <= 0.12, (offsets, [x * scale for x in want])
    final = ctx.store.delivery_for_task(task_id)
    assert final is not None and final["state"] == "failed" and final["attempts"] == 10
    assert final["last_status"] == 500


def test_callback_body_and_headers_follow_the_contract(tmp_path: Path, receiver: Receiver) -> None:
    ctx = make_ctx(tmp_path)
    task_id = finish_task_with_callback(ctx, receiver.url)
    d = CallbackDispatcher(ctx)
    d.start()
    try:
        (hit,) = receiver.wait(1)
    finally:
        d.stop()
    assert hit.headers["content-type"] == "application/json"
    assert not any(k.startswith("webhook-") for k in hit.headers)  # unsigned by default
    body = hit.json()
    assert body["code"] == 200 and body["msg"] == "success"
    data = body["data"]
    assert data["taskId"] == task_id and data["state"] == "completed"
    assert data["model"] == "kling-video/kling-advanced-lip-sync"
    assert json.loads(data["param"]) == {"model": "kling-advanced-lip-sync"}
    result = json.loads(data["resultJson"])
    assert result["videoDuration"] == 5.04 and result["resultUrls"][0].startswith(
        "http://127.0.0.1:9/media/tasks/"
    )
    assert data["failCode"] is None and data["failMsg"] is None
    assert data["costTime"] == data["completeTime"] - data["createTime"] >= 0


def test_signed_callbacks_keep_their_id_across_retries(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, callback_time_scale=0.01)
    recv = Receiver(statuses=[500])
    task_id = finish_task_with_callback(ctx, recv.url)
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    ctx.store.set_webhook_secret("acme", secret)
    d = CallbackDispatcher(ctx)
    d.start()
    try:
        hits = recv.wait(2)
    finally:
        d.stop()
        recv.close()
    ids = {h.headers["webhook-id"] for h in hits}
    assert len(ids) == 1
    for h in hits:
        signed = f"{h.headers['webhook-id']}.{h.headers['webhook-timestamp']}.".encode() + h.body
        mac = hmac.new(b"k" * 24, signed, hashlib.sha256).digest()
        assert h.headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    assert ctx.store.delivery_for_task(task_id)["state"] == "delivered"  # type: ignore[index]


def test_callback_to_a_refused_address_fails_without_retries(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    recv = Receiver()
    task_id = finish_task_with_callback(ctx, recv.url.replace("127.0.0.1", "127.0.0.2"))
    d = CallbackDispatcher(ctx)
    d.start()
    try:
        deadline = time.monotonic() + 5
        while ctx.store.delivery_for_task(task_id)["state"] == "pending":  # type: ignore[index]
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        d.stop()
        recv.close()
    final = ctx.store.delivery_for_task(task_id)
    assert final is not None and final["state"] == "failed" and final["attempts"] == 1
    assert "private or reserved address (127.0.0.2)" in final["last_error"]
    assert recv.hits == []


def test_hanging_receiver_of_one_account_does_not_delay_another(
    tmp_path: Path, db_url: str
) -> None:
    """Issue 8, case 4: ten callbacks of account X to a receiver that never answers; account
    Y's callback, queued after them, still arrives at once."""
    ctx = make_ctx(tmp_path, db_url, callback_timeout_s=5.0)
    hanging, prompt = Receiver(hang=True), Receiver()
    try:
        for _ in range(10):
            finish_task_with_callback(ctx, hanging.url, "x")
        d = CallbackDispatcher(ctx)
        d.start()
        try:
            hanging.wait(1, timeout=5)  # X's receiver is holding an attempt now
            queued = time.monotonic()
            y_task = finish_task_with_callback(ctx, prompt.url, "y")
            d.wake()
            (hit,) = prompt.wait(1, timeout=5)
            delay = hit.at - queued
            assert hit.json()["data"]["taskId"] == y_task
            assert delay < 1.0, f"Y's callback took {delay:.2f} s"
            # X holds its account's share of its receiver's slots, no more.
            time.sleep(0.3)
            assert len(hanging.hits) == ctx.settings.callback_per_account_host
        finally:
            hanging.released.set()
            d.stop()
    finally:
        hanging.close()
        prompt.close()


def test_timeouts_and_redirects_are_recorded_with_a_clear_reason(tmp_path: Path) -> None:
    """The recorded error says what happened and names the status: no more "redirects
    more than 0 times"."""
    ctx = make_ctx(tmp_path, callback_timeout_s=0.5)
    hanging, redirecting = Receiver(hang=True), Receiver(statuses=[302] * 10)
    try:
        slow = finish_task_with_callback(ctx, hanging.url, "slow")
        moved = finish_task_with_callback(ctx, redirecting.url, "moved")
        d = CallbackDispatcher(ctx)
        d.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                rows = [ctx.store.delivery_for_task(t) for t in (slow, moved)]
                if all(r is not None and r["attempts"] >= 1 for r in rows):
                    break
                time.sleep(0.05)
        finally:
            hanging.released.set()
            d.stop()
    finally:
        hanging.close()
        redirecting.close()
    timed_out, redirected = rows
    assert timed_out is not None and redirected is not None
    assert timed_out["last_error"] == "the receiver did not answer within 0.5 s"
    assert timed_out["last_status"] is None
    assert redirected["last_status"] == 302
    assert "answered HTTP 302, a redirect, and redirects are not followed" in (
        redirected["last_error"]
    )
    assert "more than 0 times" not in redirected["last_error"]


def test_failed_attempt_names_the_status(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, callback_time_scale=0.01)
    recv = Receiver(statuses=[503, 503, 503, 503] + [503] * 20)
    task_id = finish_task_with_callback(ctx, recv.url)
    d = CallbackDispatcher(ctx)
    d.start()
    try:
        recv.wait(1)
        time.sleep(0.2)
    finally:
        d.stop()
        recv.close()
    row = ctx.store.delivery_for_task(task_id)
    assert row is not None and row["last_status"] == 503
    assert "HTTP 503" in row["last_error"]

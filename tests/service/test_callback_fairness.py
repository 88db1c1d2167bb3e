"""Issue 23, item 1: callbacks of several accounts behind one receiver host (a webhook
gateway): one account's endpoint that hangs neither delays another's callbacks nor loses
its own schedule. A real HTTP receiver on loopback, a real outbox (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lipdub.config import Settings
from lipdub.service.callbacks.pacing import Lane, Pacing
from lipdub.service.callbacks.sender import CallbackDispatcher
from lipdub.service.context import Context

from .helpers import Hit, Receiver
from .test_callbacks import finish_task_with_callback, make_ctx


def task_of(hit: Hit) -> str:
    return str(hit.json()["data"]["taskId"])


def y_delay(ctx: Context, d: CallbackDispatcher, gateway: Receiver, n: int) -> float:
    """Queue one task of account Y now; seconds until its callback reached the gateway."""
    queued = time.monotonic()
    task = finish_task_with_callback(ctx, gateway.base + "/y", "y")
    d.wake()
    deadline = queued + 10
    while time.monotonic() < deadline:
        mine = [h for h in gateway.hits_at("/y") if task_of(h) == task]
        if mine:
            return mine[0].at - queued
        time.sleep(0.01)
    raise AssertionError(f"Y's callback {n} did not arrive in 10 s")


def test_hanging_endpoint_does_not_delay_another_account_behind_the_same_host(
    tmp_path: Path, db_url: str
) -> None:
    """X's endpoint hangs past the callback timeout for 10 tasks; Y's, on the same
    host:port, answers at once. Y's callbacks arrive at once while X's first attempts hang,
    after X's endpoint has timed out (back-off) and while it is probed again."""
    ctx = make_ctx(tmp_path, db_url, callback_timeout_s=2.0)
    gateway = Receiver(hang_paths={"/x"})
    try:
        for _ in range(10):
            finish_task_with_callback(ctx, gateway.base + "/x", "x")
        d = CallbackDispatcher(ctx)
        d.start()
        try:
            gateway.wait(1, timeout=5)  # X's endpoint holds an attempt now
            delays = [y_delay(ctx, d, gateway, 1)]
            time.sleep(2.5)  # X's first attempt timed out: its endpoint is backed off
            assert d.pacing.backed_off() == {gateway.base + "/x": 1}
            delays.append(y_delay(ctx, d, gateway, 2))
            time.sleep(2.0)  # X's endpoint is being probed
            delays.append(y_delay(ctx, d, gateway, 3))
            assert max(delays) < 1.0, f"Y's callbacks took {delays} s"
            # X never had more than one attempt hanging at a time (its share of the host,
            # then one probe), and kept being retried.
            assert gateway.max_hanging == 1
            assert len(gateway.hits_at("/x")) >= 2
        finally:
            gateway.released.set()
            d.stop()
    finally:
        gateway.close()


def test_x_keeps_its_schedule_until_it_gives_up(tmp_path: Path, db_url: str) -> None:
    """X's endpoint never answers. Every X delivery is still retried (never before its
    scheduled time) until the contract's give-up age, then fails with the reason; none is
    lost or given up early. Time-scaled: 30 minutes become 5.4 s."""
    scale, timeout = 0.003, 0.2
    ctx = make_ctx(tmp_path, db_url, callback_time_scale=scale, callback_timeout_s=timeout)
    gateway = Receiver(hang_paths={"/x"})
    try:
        tasks = [finish_task_with_callback(ctx, gateway.base + "/x", "x") for _ in range(10)]
        d = CallbackDispatcher(ctx)
        d.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                rows = [ctx.store.delivery_for_task(t) for t in tasks]
                if all(r is not None and r["state"] != "pending" for r in rows):
                    break
                time.sleep(0.1)
        finally:
            gateway.released.set()
            d.stop()
    finally:
        gateway.close()
    give_up_s = ctx.settings.callback_give_up_s * scale
    quick = [x * scale for x in ctx.settings.callback_retry_delays_s]
    by_task: dict[str, list[float]] = {}
    for h in gateway.hits_at("/x"):
        by_task.setdefault(task_of(h), []).append(h.at)
    for task, row in zip(tasks, rows, strict=True):
        assert row is not None and row["state"] == "failed", row
        assert row["last_error"] == f"the receiver did not answer within {timeout:g} s"
        times = by_task[task]
        assert len(times) == row["attempts"] >= 2, (task, times)
        # Given up only once the give-up age had passed since the first attempt.
        # (The last attempt ended past the age; it started up to a timeout before.)
        assert times[-1] - times[0] >= give_up_s - timeout - 0.05, (times, give_up_s)
        # Never earlier than scheduled: each retry waited the attempt's timeout and at
        # least its quick delay.
        for n, (a, b) in enumerate(zip(times, times[1:], strict=False)):
            assert b - a >= timeout + (quick[n] if n < len(quick) else 0) - 0.02, times


def test_an_endpoint_that_answers_again_gets_everything_at_once(
    tmp_path: Path, db_url: str
) -> None:
    """X's endpoint hangs, then recovers: its first answer ends the back-off and every
    X callback is delivered, in full, within seconds."""
    ctx = make_ctx(tmp_path, db_url, callback_time_scale=0.01, callback_timeout_s=0.3)
    gateway = Receiver(hang_paths={"/x"})
    try:
        tasks = [finish_task_with_callback(ctx, gateway.base + "/x", "x") for _ in range(10)]
        d = CallbackDispatcher(ctx)
        d.start()
        try:
            time.sleep(1.5)  # a few timeouts: the endpoint is backed off
            assert d.pacing.backed_off().get(gateway.base + "/x", 0) >= 1
            healed = time.monotonic()
            gateway.hang_paths.clear()
            deadline = healed + 10
            while time.monotonic() < deadline:
                rows = [ctx.store.delivery_for_task(t) for t in tasks]
                if all(r is not None and r["state"] == "delivered" for r in rows):
                    break
                time.sleep(0.05)
            took = time.monotonic() - healed
            assert d.pacing.backed_off() == {}
        finally:
            gateway.released.set()
            d.stop()
    finally:
        gateway.close()
    assert all(r is not None and r["state"] == "delivered" for r in rows), rows
    assert took < 3.0, took
    delivered = {task_of(h) for h in gateway.hits_at("/x")}
    assert delivered == set(tasks)
    for h in gateway.hits_at("/x"):
        assert json.loads(h.json()["data"]["resultJson"])["videoDuration"] == 5.04


def test_pacing_shares_a_host_and_probes_a_backed_off_endpoint(tmp_path: Path) -> None:
    """The bookkeeping alone: an account's share of a host, the host's slots, back-off
    doubling up to its ceiling, one probe at a time, and the first answer ending it."""
    s = Settings(
        data_dir=tmp_path,
        callback_per_host=2,
        callback_per_account_host=1,
        callback_endpoint_backoff_s=0.05,
        callback_endpoint_backoff_max_s=0.1,
    )
    p = Pacing(s)
    gw, x, y = "http://gw:80", "http://gw:80/x", "http://gw:80/y"
    a = p.begin(gw, "x", x)
    assert a.lane is Lane.REGULAR
    g = p.gate()
    assert g.full_shares == {(gw, "x")} and g.full_dests == set()
    b = p.begin(gw, "y", y)
    assert p.gate().full_dests == {gw}
    p.end(b, unreachable=False)
    p.end(a, unreachable=True)  # X timed out: backed off, its slot given back
    g = p.gate()
    assert g.full_dests == set() and g.full_shares == set()
    assert g.backed_off == {x} and g.probe_ready == set()
    time.sleep(0.06)
    assert p.gate().probe_ready == {x}
    probe = p.begin(gw, "x", x)
    assert probe.lane is Lane.PROBE
    assert p.gate().probe_ready == set()  # one probe at a time
    assert p.gate().full_dests == set()  # the probe holds no slot of the host
    p.end(probe, unreachable=True)
    assert p.backed_off() == {x: 2}
    time.sleep(0.06)
    assert p.gate().probe_ready == set()  # the second wait is longer (0.1 s)
    time.sleep(0.05)
    probe = p.begin(gw, "x", x)
    p.end(probe, unreachable=False)  # it answered
    assert p.backed_off() == {} and p.gate().backed_off == set()
    assert p.in_flight == 0


def test_probes_leave_half_the_senders_to_endpoints_that_answer(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, callback_senders=4, callback_endpoint_backoff_s=0)
    p = Pacing(s)
    dead = [f"http://gw{i}:80/x" for i in range(3)]
    for url in dead:  # three endpoints time out once: all backed off, ready to probe
        p.end(p.begin(url.rsplit("/", 1)[0], url, url), unreachable=True)
    assert p.gate().probe_ready == set(dead)
    probes = [p.begin(u.rsplit("/", 1)[0], u, u) for u in dead[:2]]
    assert all(a.lane is Lane.PROBE for a in probes)
    assert p.gate().probe_ready == set()  # 2 of 4 senders probing: the third waits
    assert p.has_room()  # while an endpoint that answers may still start
    p.end(probes[0], unreachable=True)
    assert p.gate().probe_ready == {dead[0], dead[2]}  # one probe ended: room for one more


def test_an_account_share_larger_than_the_host_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CALLBACK_PER_ACCOUNT_HOST must not exceed"):
        Settings.from_env(env={"LIPDUB_CALLBACK_PER_HOST": "2",
                               "LIPDUB_CALLBACK_PER_ACCOUNT_HOST": "3"})

"""The queue under faults (issue 9): each test here failed before the fix it names.

Faults are real: a TCP proxy cuts or refuses the connections to the real PostgreSQL
server, backends are terminated with pg_terminate_backend, the process clock is set
40 s ahead. Engines are test engines where only the queue mechanics matter.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from lipdub.service.models import IDENTIFY, SYNC
from lipdub.service.store import Store
from lipdub.service.worker import Worker

from .conftest import through
from .faults import FaultProxy
from .helpers import GEN, PG_URL, MediaServer, Server
from .queue_kit import (
    EndlessEngine,
    HangingEngine,
    QuickEngine,
    ledger_kinds,
    make_ctx,
    queue_task,
)


def test_completion_survives_a_database_outage(
    tmp_path: Path, pg_url: str, pg_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 2: a database error while recording completion failed the finished task
    (and refunded it). Now the completion is retried through a 2 s outage."""
    caplog.set_level(logging.INFO)
    ctx = make_ctx(tmp_path / "data", through(pg_proxy, pg_url))
    tid = queue_task(ctx, SYNC, price=6300)
    outage: list[threading.Thread] = []
    w = Worker(ctx, QuickEngine(lambda: outage.append(pg_proxy.outage_for(2.0))), slots=0)
    row = ctx.store.claim(w.name, 30_000, 3)
    assert row is not None
    w.run_task(row)
    final = ctx.store.get_task(tid)
    assert final is not None and final["state"] == "completed", final
    assert ledger_kinds(ctx, tid) == ["reserve", "settle"]  # charged once, not refunded
    assert ctx.storage.exists(f"tasks/{tid}/attempts/{row['lease_owner'].split('#')[1]}/result.mp4")
    lines = [r.getMessage() for r in caplog.records if r.name == "lipdub.worker"]
    assert any(f"task {tid}: claimed (" in m and "attempt 1-" in m for m in lines), lines
    assert any(f"task {tid}: completed in" in m and w.name in m for m in lines), lines


def test_submissions_through_a_backend_termination_storm_never_get_500(
    tmp_path: Path, pg_url: str, media_server: MediaServer
) -> None:
    """Defect 3: during a 10 Hz backend-termination storm, 9 of 22 submissions got 500,
    some for tasks that were accepted and charged. Now: 200 (the task) or 503 (retry),
    and a retry with the same external_task_id is never charged twice."""
    app_name = "lipdub_storm_" + uuid.uuid4().hex[:8]
    url = f"{pg_url}&application_name={app_name}"
    env = {"LIPDUB_DATABASE_URL": url, "LIPDUB_MAX_TASKS_PER_ACCOUNT": "0"}
    server = Server(tmp_path / "api", env=env, workers=0).start()
    stop = threading.Event()
    admin = create_engine(PG_URL)

    def storm() -> None:
        while not stop.wait(0.1):
            with admin.begin() as conn:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = :n"),
                    {"n": app_name},
                )

    codes: list[int] = []
    try:
        key = server.new_key("storm", "1")
        body = {"model": IDENTIFY, "video_url": media_server.url("videoretalking__face_3.mp4")}
        killer = threading.Thread(target=storm, daemon=True)
        storm_started = time.monotonic()
        killer.start()
        with server.client(key) as api:
            for i in range(22):
                for _ in range(30):
                    r = api.post(GEN, json={**body, "external_task_id": f"scene-{i}"})
                    codes.append(r.status_code)
                    if r.status_code != 503:
                        break
                    time.sleep(0.2)
                assert r.status_code == 200, r.text
        stop.set()
        killer.join()
        assert 500 not in codes, codes
        # One line per 10 s of outage in the API's log, however many requests met it.
        lines = [x for x in server.read_log().splitlines() if "unreachable:" in x]
        assert len(lines) <= 1 + int((time.monotonic() - storm_started) / 10), lines
        assert "Traceback" not in server.read_log()
        store = Store.open(url)
        try:
            summary = store.account_summary("storm", ledger_rows=1000)
        finally:
            store.close()
        reserves = [e for e in summary["ledger"] if e["kind"] == "reserve"]
        assert len(reserves) == 22 and len({e["task_id"] for e in reserves}) == 22
        assert summary["balance_micros"] == 1_000_000 - 22 * 700
    finally:
        stop.set()
        server.kill()
        admin.dispose()


@pytest.mark.parametrize(
    ("engine", "code", "overrides"),
    [
        (HangingEngine(), "engine_stalled", {"stall_s": 1.0}),
        (EndlessEngine(), "timeout", {"max_run_s_identify": 1.5}),
    ],
)
def test_a_hung_or_endless_engine_is_stopped_and_refunded(
    tmp_path: Path, engine: object, code: str, overrides: dict[str, float]
) -> None:
    """Defect 4: the heartbeat renewed the lease whatever the engine did, and nothing
    limited a run: a hung engine held its task for ever."""
    ctx = make_ctx(tmp_path / "data", f"sqlite:///{tmp_path / 'q.db'}", **overrides)
    tid = queue_task(ctx)
    w = Worker(ctx, engine, slots=0)  # type: ignore[arg-type]
    row = ctx.store.claim(w.name, 30_000, 3)
    assert row is not None
    done = threading.Thread(target=w.run_task, args=(row,), daemon=True)
    started = time.monotonic()
    done.start()
    done.join(15)
    assert not done.is_alive(), "the engine was never stopped"
    final = ctx.store.get_task(tid)
    assert final is not None and final["state"] == "failed" and final["fail_code"] == code
    assert ledger_kinds(ctx, tid) == ["reserve", "refund"]
    assert time.monotonic() - started < 10
    assert not any((ctx.scratch).rglob("*.jpg"))


def test_leases_and_complete_time_follow_the_database_clock(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 5: a worker whose clock ran 40 s ahead took a running task at once (the
    lease looked expired to it) and wrote a completeTime 39 s in the future."""
    ctx = make_ctx(tmp_path / "data", pg_url)
    tid = queue_task(ctx)
    honest = ctx.store.claim("honest", 30_000, 3)
    assert honest is not None
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 40)  # this process runs ahead
    assert ctx.store.claim("ahead", 30_000, 3) is None  # 30 s of lease left, by the DB
    assert ctx.store.complete(tid, honest["lease_owner"], {"x": 1}, None, None)
    final = ctx.store.get_task(tid)
    assert final is not None
    assert abs(final["complete_ms"] - ctx.store.db_now()) < 5_000
    assert abs(final["complete_ms"] - real() * 1000) < 5_000


class SlowCommitStore(Store):
    """The real store, with the completion's answer arriving 1.5 s after its commit (a
    slow network): the window in which a still-running heartbeat found the task no
    longer processing and warned "lease lost"."""

    def complete(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        mine = super().complete(*args, **kwargs)
        time.sleep(1.5)
        return mine


def test_normal_completion_logs_no_lease_lost_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 7a: a false "lease lost, stopping its engine" on 12 of 240 completions."""
    from lipdub.config import Settings
    from lipdub.service.context import Context

    settings = Settings(data_dir=tmp_path / "data", heartbeat_s=0.1)
    store = SlowCommitStore(Store.open(f"sqlite:///{tmp_path / 'q.db'}").engines)
    ctx = Context.build(settings, store)
    tid = queue_task(ctx)
    w = Worker(ctx, QuickEngine(), slots=0)
    row = ctx.store.claim(w.name, 30_000, 3)
    assert row is not None
    w.run_task(row)
    assert ctx.store.get_task(tid)["state"] == "completed"  # type: ignore[index]
    assert not [r for r in caplog.records if "lease lost" in r.getMessage()]


def test_an_outage_is_one_log_line_not_a_traceback_per_poll(
    tmp_path: Path, pg_url: str, pg_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 7b: an outage flooded the log with ~320 tracebacks per worker in 40 s."""
    caplog.set_level(logging.INFO)
    ctx = make_ctx(tmp_path / "data", through(pg_proxy, pg_url), poll_s=0.02)
    w = Worker(ctx, QuickEngine(), slots=2)
    w.start()
    try:
        time.sleep(0.5)
        with pg_proxy.outage():
            time.sleep(3)
        tid = queue_task(ctx)  # served once the database is back
        deadline = time.monotonic() + 15
        while ctx.store.get_task(tid)["state"] != "completed":  # type: ignore[index]
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        w.stop()
    records = [r for r in caplog.records if r.name == "lipdub.worker"]
    failing = [r for r in records if "claiming tasks failing" in r.getMessage()]
    recovered = [r for r in records if "claiming tasks recovered" in r.getMessage()]
    assert len(failing) == 1 and len(recovered) == 1, [r.getMessage() for r in records]
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks for an outage"


def test_healthz_answers_503_within_a_second_when_the_database_is_gone(
    tmp_path: Path, pg_url: str, pg_proxy: FaultProxy
) -> None:
    """Defect 7c: /healthz answered a generic 500 when the database was down and hung
    30 s when it hung."""
    env = {"LIPDUB_DATABASE_URL": through(pg_proxy, pg_url)}
    server = Server(tmp_path / "api", env=env, workers=0).start()
    try:
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        for mode in ("refuse", "blackhole"):
            with pg_proxy.outage(mode):
                time.sleep(0.6)  # past the reuse window of the last good probe
                started = time.monotonic()
                r = httpx.get(server.url + "/healthz", timeout=10)
                took = time.monotonic() - started
            assert r.status_code == 503, (mode, r.text)
            assert r.json()["msg"].startswith("database unreachable"), r.text
            assert took < 1.0, (mode, took)
        time.sleep(0.6)
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "healthz did not recover"
            time.sleep(0.2)
    finally:
        server.kill()


def test_metrics_stay_cheap_with_many_finished_tasks(tmp_path: Path, pg_url: str) -> None:
    """Defect 7d: /metrics scanned the whole tasks table (1 M finished tasks: 1.2 s)."""
    ctx = make_ctx(tmp_path / "data", pg_url)
    ctx.store.create_key("bulk", 0)
    n = 300_000
    with ctx.store.engines.write.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (id, account, model, state, param_json, job_json, "
                "price_micros, progress, attempts, create_ms, complete_ms, purged) "
                "SELECT 'bulk' || g, 'bulk', :m, 'completed', '{}', '{}', 700, 1, 1, "
                "g * 10, g * 10 + 4000, 0 FROM generate_series(1, :n) g"
            ),
            {"m": IDENTIFY, "n": n},
        )
        # What the transaction finishing each of them would have counted.
        conn.execute(
            text("INSERT INTO task_stats (model, state, bucket, n, sum_ms) "
                 "VALUES (:m, 'completed', 1, :n, :s)"),
            {"m": IDENTIFY, "n": n, "s": n * 4000},
        )
        conn.execute(text("ANALYZE tasks"))
    queue_task(ctx)  # one pending
    from prometheus_client import generate_latest

    from lipdub.service.ops.metrics import make_registry

    registry = make_registry(ctx.store)

    def best_of_3(fn: object) -> float:
        times = []
        for _ in range(3):
            started = time.monotonic()
            fn()  # type: ignore[operator]
            times.append(time.monotonic() - started)
        return min(times)

    def whole_table() -> None:  # what /metrics ran before
        with ctx.store.engines.read.connect() as conn:
            conn.execute(text("SELECT model, state, count(*) FROM tasks GROUP BY 1, 2")).all()

    body = generate_latest(registry).decode()
    assert f'lipdub_tasks{{model="{IDENTIFY}",state="completed"}} {float(n)}' in body
    assert f'lipdub_tasks{{model="{IDENTIFY}",state="pending"}} 1.0' in body
    assert f'lipdub_task_duration_seconds_bucket{{le="5.0",model="{IDENTIFY}"}} {float(n)}' in body
    # Against the whole-table count on the same machine at the same moment (a time limit
    # alone would depend on the machine's load): the scrape reads a few rows, not 300,000.
    scrape, scan = best_of_3(lambda: generate_latest(registry)), best_of_3(whole_table)
    assert scrape * 5 < scan, (scrape, scan)


def test_one_accounts_burst_does_not_starve_another(tmp_path: Path, db_url: str) -> None:
    """Fairness: a burst of 10 from one account, then one task from another; the
    second account's task runs second, not eleventh."""
    ctx = make_ctx(tmp_path / "data", db_url)
    burst = [queue_task(ctx, account="bulk") for _ in range(10)]
    lone = queue_task(ctx, account="lone")
    order = []
    while (row := ctx.store.claim("w", 60_000, 3)) is not None:
        order.append(row["id"])
    assert order[0] == burst[0] and order[1] == lone, order
    assert order[2:] == burst[1:]


def test_a_new_task_wakes_an_idle_worker_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Wake-up: with a 30 s poll, only the NOTIFY can start the task within seconds."""
    ctx = make_ctx(tmp_path / "data", pg_url, poll_s=30.0)
    w = Worker(ctx, QuickEngine(), slots=1)
    w.start()
    try:
        time.sleep(1.0)  # the slot is idle, the listener connected
        tid = queue_task(ctx)
        deadline = time.monotonic() + 5
        while ctx.store.get_task(tid)["state"] != "completed":  # type: ignore[index]
            assert time.monotonic() < deadline, "the worker was not woken"
            time.sleep(0.05)
    finally:
        w.stop()

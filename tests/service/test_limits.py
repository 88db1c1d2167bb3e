"""Per-account limits and the smaller hardening cases of issue 8, against a real
`lipdub serve` on loopback with a real trickling source."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from .helpers import GEN, MediaServer, Server, TrickleServer, server_fixture

VIDEO = "videoretalking__face_2.mp4"
WINDOW_S = 3.0


server = server_fixture(
    "limits",
    workers=0,  # tasks stay pending: they count against the task limit
    env={
        "LIPDUB_RATE_LIMIT_PER_S": "20",
        "LIPDUB_MAX_TASKS_PER_ACCOUNT": "2",
        "LIPDUB_MAX_DOWNLOADS_PER_ACCOUNT": "2",
        "LIPDUB_MAX_DOWNLOADS": "3",
        "LIPDUB_FETCH_RATE_WINDOW_S": str(WINDOW_S),
    },
)


@pytest.fixture()
def trickle() -> Iterator[TrickleServer]:
    t = TrickleServer(interval_s=0.2)
    yield t
    t.close()


def identify(url: str, **extra: object) -> dict[str, object]:
    return {"model": "kling-identify-face", "video_url": url, **extra}


def envelope_of(r: httpx.Response, status: int, needle: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == status and needle in body["msg"], body
    return str(body["msg"])


def test_request_rate_per_account(server: Server) -> None:
    hog, other = server.new_key("hog", "1"), server.new_key("calm", "1")
    with server.client(hog) as c, ThreadPoolExecutor(8) as pool:
        # 80 requests from 8 connections at once: far more than 20 in any second.
        replies = list(pool.map(lambda _: c.get(GEN, params={"task_id": "x"}), range(80)))
    codes = [r.status_code for r in replies]
    assert codes.count(429) >= 20 and set(codes) == {404, 429}, codes
    refused = next(r for r in replies if r.status_code == 429)
    envelope_of(refused, 429, "this account may send 20 per second")
    assert refused.headers["retry-after"] == "1"
    with server.client(other) as c:  # another account is not slowed down
        assert c.get(GEN, params={"task_id": "x"}).status_code == 404


def test_concurrent_tasks_per_account(server: Server, media_server: MediaServer) -> None:
    with server.client(server.new_key("busy", "1")) as c:
        for _ in range(2):
            assert c.post(GEN, json=identify(media_server.url(VIDEO))).status_code == 200
        r = c.post(GEN, json=identify(media_server.url(VIDEO)))
        envelope_of(r, 429, "may have 2 pending or processing")
    with server.client(server.new_key("idle", "1")) as c:
        assert c.post(GEN, json=identify(media_server.url(VIDEO))).status_code == 200


def test_download_slots_and_minimum_rate(server: Server, trickle: TrickleServer) -> None:
    """Two trickles fill account A's slots: its third is refused at once (429); B's takes
    the server's last slot, so C is told the server is busy (503). Each trickle is cut
    one rate window after it started, not at the 60 s deadline."""
    a, b, c = (server.new_key(n, "1") for n in ("slots-a", "slots-b", "slots-c"))

    def submit(key: str, tag: str) -> tuple[httpx.Response, float]:
        t0 = time.monotonic()
        with server.client(key) as cl:
            return cl.post(GEN, json=identify(trickle.url(tag))), time.monotonic() - t0

    with ThreadPoolExecutor(3) as pool:
        slow: list[Future[tuple[httpx.Response, float]]] = [
            pool.submit(submit, a, "a1"),
            pool.submit(submit, a, "a2"),
            pool.submit(submit, b, "b1"),
        ]
        deadline = time.monotonic() + 10
        while trickle.active < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert trickle.active == 3
        r, took = submit(a, "a3")
        envelope_of(r, 429, "may have 2 inputs downloading")
        assert took < 1.0
        r, took = submit(c, "c1")
        envelope_of(r, 503, "downloading 3 inputs already")
        assert took < 1.0
        assert "a3" not in trickle.seen and "c1" not in trickle.seen
        results = [f.result(timeout=30) for f in slow]
    for r, took in results:
        envelope_of(r, 400, f"sent less than 16 KB/s for {WINDOW_S:g} s and was cut off")
        assert WINDOW_S - 0.5 < took < WINDOW_S + 3, took
    # The slots are free again.
    r, _ = submit(c, "c2")
    assert r.status_code == 400 and "c2" in trickle.seen


def test_zero_credit_key_is_refused_before_any_download(
    server: Server, trickle: TrickleServer
) -> None:
    with server.client(server.new_key("zero", "0")) as c:
        t0 = time.monotonic()
        r = c.post(GEN, json=identify(trickle.url("zero")))
        took = time.monotonic() - t0
    envelope_of(r, 402, "costs at least $0.0007")
    assert took < 1.0 and "zero" not in trickle.seen


@pytest.mark.parametrize(
    "query",
    [
        "e=99999999999999&s=%C3%A9",
        "e=99999999999999&s=%ff%fe",
        "e=-1&s=x",
        "e=1" + "0" * 40 + "&s=x",
        "e=abc&s=x",
        "e=99999999999999&s=" + "A" * 5000,
    ],
)
def test_media_links_with_hostile_queries_are_4xx(server: Server, query: str) -> None:
    for key in ("x", "uploads/..%2F..%2Fsigning.key", "%00", "tasks/%C3%A9/result.mp4"):
        r = httpx.get(f"{server.url}/media/{key}?{query}")
        assert 400 <= r.status_code < 500, (key, query, r.text)
        assert r.json()["code"] == r.status_code


def test_times_must_be_integers_and_volumes_numbers(server: Server) -> None:
    cases: list[tuple[str, object]] = [
        (field, value)
        for field in ("sound_start_time", "sound_end_time", "sound_insert_time")
        for value in (True, "100", 1.5, 1.0, [1])
    ]
    cases += [("sound_volume", True), ("sound_volume", "1"), ("original_audio_volume", "0.5")]
    with server.client(server.new_key("strict", "1")) as c:
        for field, value in cases:
            face = {"face_id": "face_001", "sound_file": "http://127.0.0.1:9/a.wav", field: value}
            r = c.post(
                GEN,
                json={"model": "kling-advanced-lip-sync", "session_id": "s", "face_choose": [face]},
            )
            envelope_of(r, 400, f"face_choose[0].{field}")
            time.sleep(0.06)  # stay under the module's 20 requests per second


def test_external_task_id_of_another_model_is_400(
    server: Server, media_server: MediaServer
) -> None:
    with server.client(server.new_key("reuser", "1")) as c:
        first = c.post(GEN, json=identify(media_server.url(VIDEO), external_task_id="job-1"))
        assert first.status_code == 200, first.text
        r = c.post(
            GEN,
            json={
                "model": "kling-advanced-lip-sync",
                "session_id": "s",
                "face_choose": [{"face_id": "face_001", "sound_file": "x"}],
                "external_task_id": "job-1",
            },
        )
        msg = envelope_of(r, 400, "external_task_id 'job-1' already names a kling-identify-face")
        assert first.json()["data"]["taskId"] in msg


def test_idempotency_key_header_makes_retries_safe(
    server: Server, media_server: MediaServer
) -> None:
    with server.client(server.new_key("retrier", "0.0014")) as c:
        body = identify(media_server.url(VIDEO))
        ids = [
            c.post(GEN, json=body, headers={"Idempotency-Key": "scene-1"}).json()["data"]["taskId"]
            for _ in range(2)
        ]
        assert ids[0] == ids[1]
        task = c.get(GEN, params={"task_id": ids[0]}).json()["data"]
        assert task["externalTaskId"] == "scene-1"
    summary = server.cli("account", "show", "retrier", "--json").stdout
    assert '"balance_micros": 700' in summary  # charged once


def test_revoked_key_answers_401_at_once(server: Server) -> None:
    key = server.new_key("revokee", "1")
    with server.client(key) as c:
        assert c.get(GEN, params={"task_id": "x"}).status_code == 404  # known key, no task
        listing = server.cli("keys", "list", "revokee")
        assert key[:10] in listing.stdout
        out = server.cli("keys", "revoke", key[:10])
        assert out.returncode == 0 and "is revoked" in out.stdout, out.stderr
        r = c.get(GEN, params={"task_id": "x"})
        envelope_of(r, 401, "Invalid API key")
    assert "revoked" in server.cli("keys", "revoke", key).stdout  # "was already revoked"

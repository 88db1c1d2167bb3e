"""lipdub's Kling client (service/upstream) against the fake Kling, and the fake's own
documented behaviour: JWT checks, API keys, shapes, states, callbacks, listing, errors,
back-off. All over real HTTP on loopback."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from lipdub.service.upstream import (
    Cancelled,
    GaveUp,
    KlingClient,
    KlingError,
    KlingUnreachable,
    failure_for,
    with_backoff,
)
from tests.support.fake_kling import FakeKling

from .helpers import MEDIA, MediaServer, Receiver, free_port

VIDEO = "videoretalking__face_2.mp4"
AUDIO = "videoretalking__audio_1.wav"


@pytest.fixture()
def fake() -> Iterator[FakeKling]:
    f = FakeKling(api_key="kling-plain-api-key", result_video=MEDIA / "videoretalking__face_3.mp4",
                  processing_after_s=0.2, done_after_s=0.5)
    yield f
    f.close()


def client_for(fake: FakeKling, **over: str) -> KlingClient:
    args = {"access_key": fake.access_key, "secret_key": fake.secret_key, **over}
    return KlingClient(fake.base_url, timeout_s=30, **args)


def raw(fake: FakeKling, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if token is not None and token.startswith("Basic"):
        headers = {"Authorization": token}
    return httpx.get(f"{fake.base_url}/v1/videos/advanced-lip-sync/1", headers=headers)


def test_the_signed_token_has_klings_documented_shape(fake: FakeKling) -> None:
    token = client_for(fake).bearer()
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, fake.secret_key, algorithms=["HS256"])
    now = time.time()
    assert claims["iss"] == fake.access_key
    assert abs(claims["exp"] - (now + 1800)) < 5 and abs(claims["nbf"] - (now - 5)) < 5


def test_tokens_are_checked_as_kling_documents(fake: FakeKling) -> None:
    now = int(time.time())

    def signed(secret: str = fake.secret_key, **claims: object) -> str:
        base = {"iss": fake.access_key, "exp": now + 1800, "nbf": now - 5}
        return jwt.encode({**base, **claims}, secret, algorithm="HS256")

    cases = {
        None: 1001,  # no Authorization header
        "Basic-not-a-token": 1002,
        signed(exp=now - 10): 1004,  # expired
        signed(nbf=now + 600): 1003,  # not yet valid
        signed(secret="another-secret"): 1002,  # bad signature
        signed(iss="someone-else"): 1000,
    }
    for token, code in cases.items():
        r = raw(fake, token)
        body = r.json()
        assert (r.status_code, body["code"]) == (401, code), (token, body)
        assert "data" not in body and body["request_id"]
    assert raw(fake, "kling-plain-api-key").json()["code"] == 1203  # authenticated: no task


def test_wrong_credentials_fail_the_task_as_an_auth_problem(fake: FakeKling) -> None:
    c = client_for(fake, secret_key="not-the-secret")
    with pytest.raises(KlingError) as e:
        c.task("1")
    assert (e.value.status, e.value.code) == (401, 1002)
    f = failure_for(e.value)
    assert f.code == "upstream_auth" and "LIPDUB_KLING_SECRET_KEY" in f.message


def test_an_api_key_is_sent_as_the_bearer_itself(fake: FakeKling) -> None:
    c = KlingClient(fake.base_url, api_key="kling-plain-api-key")
    assert c.bearer() == "kling-plain-api-key"
    assert c.list_tasks(1, 10) == []


def test_missing_settings_are_named(fake: FakeKling) -> None:
    assert "no Kling credentials" in (KlingClient(fake.base_url).problem() or "")
    assert "only one of" in (KlingClient(fake.base_url, access_key="a").problem() or "")
    assert KlingClient(fake.base_url, api_key="k").problem() is None
    assert "not an http(s) URL" in (KlingClient("api.klingai.com", api_key="k").problem() or "")


def test_identify_submit_states_result_and_callbacks(
    fake: FakeKling, media_server: MediaServer, receiver: Receiver
) -> None:
    c = client_for(fake)
    data = c.identify(media_server.url(VIDEO))
    assert data["session_id"].isdigit() and len(data["session_id"]) >= 18
    (face,) = data["face_data"]
    assert set(face) == {"face_id", "face_image", "start_time", "end_time"}
    assert httpx.get(face["face_image"]).content == fake.face_image
    body = {
        "session_id": data["session_id"],
        "face_choose": [{
            "face_id": face["face_id"],
            "sound_file": base64.b64encode((MEDIA / AUDIO).read_bytes()).decode(),
            "sound_start_time": 0, "sound_end_time": 3000, "sound_insert_time": 0,
            "sound_volume": 1, "original_audio_volume": 1,
        }],
        "external_task_id": "lipdub-task-1",
        "callback_url": receiver.url,
    }
    created = c.submit(body)
    assert created["task_status"] == "submitted"
    assert created["task_info"] == {"external_task_id": "lipdub-task-1"}
    task_id = created["task_id"]
    assert isinstance(task_id, str) and task_id.isdigit()
    seen = {c.task(task_id)["task_status"]}
    deadline = time.monotonic() + 10
    while "succeed" not in seen:
        assert time.monotonic() < deadline
        seen.add(c.task(task_id)["task_status"])
        time.sleep(0.05)
    assert {"processing", "succeed"} <= seen
    done = c.task(task_id)
    (video,) = done["task_result"]["videos"]
    assert float(video["duration"]) > 4 and httpx.get(video["url"]).status_code == 200
    # Kling POSTs the task object on each change of status.
    hits = receiver.wait(3, timeout=10)
    statuses = [h.json()["task_status"] for h in hits[:3]]
    assert statuses == ["submitted", "processing", "succeed"]
    assert hits[-1].json()["task_result"]["videos"][0]["url"] == video["url"]
    # The same external_task_id is refused; the task is found by it instead.
    with pytest.raises(KlingError) as e:
        c.submit(body)
    assert (e.value.status, e.value.code) == (400, 1201)
    found = c.find_by_external_id("lipdub-task-1")
    assert found is not None and found["task_id"] == task_id
    assert c.find_by_external_id("never-submitted") is None


def test_requests_kling_refuses(fake: FakeKling, media_server: MediaServer) -> None:
    c = client_for(fake)
    small = media_server.url("infinitetalk__ref_video.mp4")  # 458 px: Kling needs 512
    with pytest.raises(KlingError) as e:
        c.identify(small)
    assert e.value.code == 1201 and "512-2160" in e.value.message
    session = c.identify(media_server.url(VIDEO))["session_id"]
    short = {"session_id": session, "face_choose": [{
        "face_id": "0", "sound_file": media_server.url(AUDIO),
        "sound_start_time": 0, "sound_end_time": 1500, "sound_insert_time": 0,
    }]}
    with pytest.raises(KlingError) as e:
        c.submit(short)
    assert "at least 2 s" in e.value.message
    with pytest.raises(KlingError) as e:
        c.list_tasks(1, 501)
    assert e.value.code == 1201


def test_back_off_retries_what_is_worth_retrying_and_gives_up_in_time(fake: FakeKling) -> None:
    c = client_for(fake)
    fake.fail_next("list", 5002, times=2)
    fake.fail_next("list", 1302, times=1)
    stop = threading.Event()
    assert with_backoff(lambda: c.list_tasks(1), "test", stop, 10, 0.05, 0.1) == []
    fake.fail_next("list", 1102)  # credits used up: no use waiting
    with pytest.raises(KlingError) as e:
        with_backoff(lambda: c.list_tasks(1), "test", stop, 10, 0.05, 0.1)
    assert failure_for(e.value).code == "upstream_account"
    fake.outage()
    started = time.monotonic()
    with pytest.raises(GaveUp) as gave:
        with_backoff(lambda: c.list_tasks(1), "test", stop, 1.0, 0.1, 0.2)
    assert 0.5 < time.monotonic() - started < 3
    assert failure_for(gave.value.error, gave.value.waited_s).code == "upstream_unavailable"
    stop.set()
    with pytest.raises(Cancelled):
        with_backoff(lambda: c.list_tasks(1), "test", stop, 30, 0.1, 0.2)


def test_no_answer_at_all_is_unreachable_and_retryable() -> None:
    c = KlingClient(f"http://127.0.0.1:{free_port()}", api_key="k", connect_timeout_s=1)
    with pytest.raises(KlingUnreachable):
        c.task("1")


def test_the_fakes_rate_and_concurrency_limits(fake: FakeKling, media_server: MediaServer) -> None:
    c = client_for(fake)
    session = c.identify(media_server.url(VIDEO))["session_id"]

    def body(n: int) -> dict[str, object]:
        return {"session_id": session, "external_task_id": f"t{n}", "face_choose": [{
            "face_id": "0", "sound_file": base64.b64encode((MEDIA / AUDIO).read_bytes()).decode(),
            "sound_start_time": 0, "sound_end_time": 3000, "sound_insert_time": 0,
        }]}

    fake.max_running = 1
    c.submit(body(1))
    with pytest.raises(KlingError) as e:
        c.submit(body(2))
    assert (e.value.status, e.value.code) == (429, 1303)
    fake.max_running = 0
    fake.rate_limit_per_s = 2
    time.sleep(1.1)
    c.list_tasks(1)
    c.list_tasks(1)
    with pytest.raises(KlingError) as e:
        c.list_tasks(1)
    assert (e.value.status, e.value.code) == (429, 1302)

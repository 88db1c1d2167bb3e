"""Kling's own API served by lipdub (/v1), driven by the client code a Kling user writes:
PyJWT signing {iss, exp, nbf} with the secret key, httpx sending it as the bearer, against
a real `lipdub serve` with the real engine on real clips, and a real callback receiver."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import jwt
import pytest

from .helpers import GEN, MediaServer, Receiver, Server, server_fixture

server = server_fixture("kling", env={"LIPDUB_CALLBACK_TIME_SCALE": "0.01"})
VIDEO = "videoretalking__face_5.mp4"  # 4.9 s, one frontal face
AUDIO = "videoretalking__audio_1.wav"  # 5.0 s of speech


# --- what a Kling user writes (Kling's docs: JWT from AK/SK, HS256, 30 min) -----------


def encode_jwt_token(ak: str, sk: str, *, exp_in: int = 1800, nbf_ago: int = 5) -> str:
    headers = {"alg": "HS256", "typ": "JWT"}
    now = int(time.time())
    payload = {"iss": ak, "exp": now + exp_in, "nbf": now - nbf_ago}
    return jwt.encode(payload, sk, algorithm="HS256", headers=headers)


def kling_client(base_url: str, ak: str, sk: str) -> httpx.Client:
    token = encode_jwt_token(ak, sk)
    return httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=120,
    )


# --- set-up ----------------------------------------------------------------------------


def kling_pair(server: Server, account: str) -> tuple[str, str]:
    out = server.cli("keys", "kling", account)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-2:]
    assert last[0].startswith("access_key=") and last[1].startswith("secret_key="), out.stdout
    return last[0].split("=", 1)[1], last[1].split("=", 1)[1]


@pytest.fixture(scope="module")
def acme(server: Server) -> dict[str, str]:
    key = server.new_key("kacme", "5")
    ak, sk = kling_pair(server, "kacme")
    return {"key": key, "ak": ak, "sk": sk}


@pytest.fixture(scope="module")
def other(server: Server) -> dict[str, str]:
    key = server.new_key("kother", "5")
    ak, sk = kling_pair(server, "kother")
    return {"key": key, "ak": ak, "sk": sk}


@pytest.fixture(scope="module")
def media() -> Iterator[MediaServer]:
    m = MediaServer()
    yield m
    m.close()


def kling_error(r: httpx.Response, status: int, code: int) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert r.status_code == status, r.text
    assert body["code"] == code, r.text
    assert "data" not in body and body["message"] and body["request_id"], r.text
    return body


def wait_kling(c: httpx.Client, task_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(f"/v1/videos/advanced-lip-sync/{task_id}")
        assert r.status_code == 200 and r.json()["code"] == 0, r.text
        data: dict[str, Any] = r.json()["data"]
        if data["task_status"] in ("succeed", "failed"):
            return data
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish")


# --- the whole workflow ----------------------------------------------------------------


def test_a_kling_client_dubs_a_video_unchanged(
    server: Server, acme: dict[str, str], other: dict[str, str], media: MediaServer
) -> None:
    receiver = Receiver()
    try:
        with kling_client(server.url, acme["ak"], acme["sk"]) as c:
            # identify-face answers synchronously, with lipdub-served face images
            r = c.post("/v1/videos/identify-face", json={"video_url": media.url(VIDEO)})
            assert r.status_code == 200 and r.json()["code"] == 0, r.text
            ident = r.json()["data"]
            session_id = ident["session_id"]
            face = ident["face_data"][0]
            assert isinstance(face["face_id"], str)
            assert 0 <= face["start_time"] < face["end_time"] <= 4950
            assert face["face_image"].startswith(server.url)
            img = httpx.get(face["face_image"], timeout=30)
            assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"  # a JPEG

            body = {
                "session_id": session_id,
                "face_choose": [
                    {
                        "face_id": face["face_id"],
                        "sound_file": media.url(AUDIO),
                        "sound_start_time": 0,
                        "sound_end_time": 3000,
                        "sound_insert_time": 500,
                        "sound_volume": 1,
                        "original_audio_volume": 0.5,
                    }
                ],
                "external_task_id": "kling-ext-1",
                "callback_url": receiver.url,
            }
            r = c.post("/v1/videos/advanced-lip-sync", json=body)
            assert r.status_code == 200 and r.json()["code"] == 0, r.text
            created = r.json()["data"]
            task_id = created["task_id"]
            assert isinstance(task_id, str) and task_id.isdigit()
            assert created["task_status"] == "submitted"
            assert created["task_info"] == {"external_task_id": "kling-ext-1"}
            assert created["created_at"] == created["updated_at"] > 1.7e12

            done = wait_kling(c, task_id)
            assert done["task_status"] == "succeed", done
            video = done["task_result"]["videos"][0]
            assert video["id"] == task_id
            assert float(video["duration"]) == pytest.approx(4.9, abs=0.1)
            mp4 = httpx.get(video["url"], timeout=60)
            assert mp4.status_code == 200
            with av.open(io.BytesIO(mp4.content)) as container:
                stream = container.streams.video[0]
                assert (stream.width, stream.height) == (524, 524)
                assert float(container.duration or 0) / 1e6 == pytest.approx(4.9, abs=0.15)

            # the same task by external_task_id, and in the list
            by_ext = c.get("/v1/videos/advanced-lip-sync/kling-ext-1").json()["data"]
            assert by_ext["task_id"] == task_id
            page = c.get("/v1/videos/advanced-lip-sync", params={"pageNum": 1, "pageSize": 5})
            assert [t["task_id"] for t in page.json()["data"]] == [task_id]
            assert c.get(
                "/v1/videos/advanced-lip-sync", params={"pageNum": 2, "pageSize": 5}
            ).json()["data"] == []

        # the callback, in Kling's shape (the task object, no envelope)
        hit = receiver.wait(1, timeout=60)[0].json()
        assert hit["task_id"] == task_id and hit["task_status"] == "succeed"
        assert hit["task_info"]["external_task_id"] == "kling-ext-1"
        assert hit["task_result"]["videos"][0]["url"].startswith(server.url)
        assert "code" not in hit and "data" not in hit

        # the same task through the reseller contract, with the same account's API key
        with server.client(acme["key"]) as rc:
            lipdub_id = "cl" + format(int(task_id), "032x")
            seen = rc.get(GEN, params={"task_id": lipdub_id}).json()["data"]
            assert seen["state"] == "completed" and seen["externalTaskId"] == "kling-ext-1"
            usage = rc.get("/api/v1/usage").json()["data"]
            # identify ($0.0007) + one started 5 s block of lip-sync ($0.0063)
            assert usage["total_micros"] == 700 + 6300

        # the plain API key as Kling's bearer sees it too
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {acme['key']}"}
        ) as kc:
            assert kc.get(f"/v1/videos/advanced-lip-sync/{task_id}").json()["code"] == 0

        # another account: not found, not listed, its session unusable
        with kling_client(server.url, other["ak"], other["sk"]) as oc:
            kling_error(oc.get(f"/v1/videos/advanced-lip-sync/{task_id}"), 404, 1203)
            kling_error(oc.get("/v1/videos/advanced-lip-sync/kling-ext-1"), 404, 1203)
            assert oc.get("/v1/videos/advanced-lip-sync").json()["data"] == []
            body["external_task_id"] = "other-1"
            r = oc.post("/v1/videos/advanced-lip-sync", json=body)
            assert "session_id" in kling_error(r, 400, 1201)["message"]
    finally:
        receiver.close()


# --- authentication, as Kling checks it --------------------------------------------------


def _bearer(server: Server, token: str) -> httpx.Response:
    return httpx.get(
        server.url + "/v1/videos/advanced-lip-sync",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_tokens_are_checked_with_klings_codes(server: Server, acme: dict[str, str]) -> None:
    ak, sk = acme["ak"], acme["sk"]
    assert _bearer(server, encode_jwt_token(ak, sk)).json()["code"] == 0
    # expired, beyond the leeway (5 s)
    kling_error(_bearer(server, encode_jwt_token(ak, sk, exp_in=-30)), 401, 1004)
    # not yet valid: nbf a minute ahead
    kling_error(_bearer(server, encode_jwt_token(ak, sk, nbf_ago=-60)), 401, 1003)
    # within the leeway both still pass
    assert _bearer(server, encode_jwt_token(ak, sk, exp_in=-2)).json()["code"] == 0
    assert _bearer(server, encode_jwt_token(ak, sk, nbf_ago=-2)).json()["code"] == 0
    # wrong signature; unknown access key; wrong algorithm; no exp
    kling_error(_bearer(server, encode_jwt_token(ak, sk + "x")), 401, 1000)
    kling_error(_bearer(server, encode_jwt_token("0" * 32, sk)), 401, 1000)
    now = int(time.time())
    hs512 = jwt.encode({"iss": ak, "exp": now + 60}, sk, algorithm="HS512")
    kling_error(_bearer(server, hs512), 401, 1002)
    no_exp = jwt.encode({"iss": ak, "nbf": now - 5}, sk, algorithm="HS256")
    assert "exp" in kling_error(_bearer(server, no_exp), 401, 1002)["message"]
    # unreadable token, unknown API key, no header, not a bearer
    kling_error(_bearer(server, "a.b.c"), 401, 1002)
    kling_error(_bearer(server, "ld_not-a-key"), 401, 1000)
    r = httpx.get(server.url + "/v1/videos/advanced-lip-sync", timeout=30)
    kling_error(r, 401, 1001)
    r = httpx.get(
        server.url + "/v1/videos/advanced-lip-sync",
        headers={"Authorization": f"Basic {acme['key']}"},
        timeout=30,
    )
    kling_error(r, 401, 1002)


def test_a_revoked_pair_answers_1000_at_once(server: Server) -> None:
    server.new_key("krevoked", "1")
    ak, sk = kling_pair(server, "krevoked")
    token = encode_jwt_token(ak, sk)
    assert _bearer(server, token).json()["code"] == 0
    out = server.cli("keys", "kling-revoke", ak)
    assert out.returncode == 0, out.stderr
    kling_error(_bearer(server, token), 401, 1000)


def test_keys_kling_needs_an_existing_account(server: Server) -> None:
    out = server.cli("keys", "kling", "nobody-here")
    assert out.returncode == 1 and "lipdub keys create nobody-here" in out.stdout + out.stderr


# --- refusals ------------------------------------------------------------------------------


def test_no_credits_is_1102(server: Server, media: MediaServer) -> None:
    server.new_key("kbroke", "0")
    ak, sk = kling_pair(server, "kbroke")
    with kling_client(server.url, ak, sk) as c:
        r = c.post("/v1/videos/identify-face", json={"video_url": media.url(VIDEO)})
        assert "balance" in kling_error(r, 429, 1102)["message"]


def test_bad_parameters_are_1201(server: Server, acme: dict[str, str], media: MediaServer) -> None:
    with kling_client(server.url, acme["ak"], acme["sk"]) as c:
        both = {"video_url": media.url(VIDEO), "video_id": "123"}
        kling_error(c.post("/v1/videos/identify-face", json=both), 400, 1201)
        kling_error(c.post("/v1/videos/identify-face", json={}), 400, 1201)
        r = c.post("/v1/videos/identify-face", json={"video_urll": media.url(VIDEO)})
        assert "video_url" in kling_error(r, 400, 1201)["message"]  # did you mean
        r = c.post("/v1/videos/advanced-lip-sync", json={"session_id": "s"})
        assert "face_choose" in kling_error(r, 400, 1201)["message"]
        bad_volume = {
            "session_id": "s",
            "face_choose": [{"face_id": "f", "sound_file": "x", "sound_volume": 5}],
        }
        r = c.post("/v1/videos/advanced-lip-sync", json=bad_volume)
        assert "sound_volume" in kling_error(r, 400, 1201)["message"]
        unknown_session = {
            "session_id": "session_nope",
            "face_choose": [{"face_id": "f", "sound_file": media.url(AUDIO)}],
        }
        r = c.post("/v1/videos/advanced-lip-sync", json=unknown_session)
        assert "session_id" in kling_error(r, 400, 1201)["message"]
        r = c.post(
            "/v1/videos/identify-face",
            content=b"not json",
            headers={"Content-Type": "application/json"},
        )
        kling_error(r, 400, 1201)
        r = c.get("/v1/videos/advanced-lip-sync", params={"pageSize": 501})
        assert "pageSize" in kling_error(r, 400, 1201)["message"]


def test_unknown_tasks_and_endpoints(server: Server, acme: dict[str, str]) -> None:
    with kling_client(server.url, acme["ak"], acme["sk"]) as c:
        kling_error(c.get("/v1/videos/advanced-lip-sync/123456789012345678"), 404, 1203)
        kling_error(c.get("/v1/videos/advanced-lip-sync/" + "9" * 60), 404, 1203)
        kling_error(c.get("/v1/videos/no-such-thing"), 404, 1202)
        kling_error(c.delete("/v1/videos/advanced-lip-sync"), 404, 1202)
    # the reseller contract keeps its own envelope beside it
    r = httpx.get(server.url + "/api/v1/no-such-thing", timeout=30)
    assert r.status_code == 404 and r.json()["code"] == 404 and "msg" in r.json()


def test_a_body_too_large_is_1201_before_it_is_read(server: Server, acme: dict[str, str]) -> None:
    head = (
        "POST /v1/videos/identify-face HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {acme['key']}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 400 " in status_line, answer[:300]
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["code"] == 1201 and "larger than" in body["message"] and "data" not in body


# --- identify's deadline ---------------------------------------------------------------------


slow = server_fixture("kling_deadline", env={"LIPDUB_KLING_IDENTIFY_TIMEOUT_S": "0.5"})


def test_identify_past_its_deadline_is_5002_and_refunded(
    slow: Server, media: MediaServer
) -> None:
    key = slow.new_key("kslow", "1")
    ak, sk = kling_pair(slow, "kslow")
    with kling_client(slow.url, ak, sk) as c:
        started = time.monotonic()
        # 15 s of video: identify takes seconds, far past the 0.5 s deadline
        r = c.post(
            "/v1/videos/identify-face", json={"video_url": media.url("infinitetalk__ref_video.mp4")}
        )
        took = time.monotonic() - started
    assert "0.5 s" in kling_error(r, 504, 5002)["message"]
    assert took < 15, took  # answered at the deadline (plus the download), not hung
    with slow.client(key) as rc:
        items = rc.get(GEN).json()["data"]["items"]
        assert [(t["state"], t["failCode"]) for t in items] == [("failed", "cancelled")]
        usage = rc.get("/api/v1/usage").json()["data"]
        assert usage["balance_micros"] == 1_000_000 and usage["reserved_micros"] == 0


# --- PostgreSQL, and a signing key that changed -----------------------------------------


def test_on_postgresql_a_changed_signing_key_invalidates_pairs(tmp_path: Path, pg_url: str) -> None:
    env = {"LIPDUB_DATABASE_URL": pg_url, "LIPDUB_SIGNING_KEY": "first-signing-key"}
    s = Server(tmp_path / "pg", env=env, workers=0).start()
    try:
        s.new_key("kpg", "1")
        ak, sk = kling_pair(s, "kpg")
        token = encode_jwt_token(ak, sk)
        assert _bearer(s, token).json()["code"] == 0
        kling_error(_bearer(s, encode_jwt_token(ak, sk, exp_in=-60)), 401, 1004)
        kling_error(_bearer(s, "1" * 20), 401, 1000)
    finally:
        s.kill()
    s = Server(
        tmp_path / "pg", env={**env, "LIPDUB_SIGNING_KEY": "second-signing-key"}, workers=0
    ).start()
    try:
        assert "no longer valid" in kling_error(_bearer(s, token), 401, 1000)["message"]
        assert "issued under another signing key" in s.read_log()
    finally:
        s.kill()


# --- the account's limits, in Kling's codes ----------------------------------------------

limited = server_fixture(
    "kling_limits",
    workers=0,  # nothing runs: a task stays pending, holding the account's one slot
    env={
        "LIPDUB_KLING_IDENTIFY_TIMEOUT_S": "3",
        "LIPDUB_MAX_TASKS_PER_ACCOUNT": "1",
        "LIPDUB_RATE_LIMIT_PER_S": "5",
    },
)


def test_concurrency_is_1303_and_rate_is_1302(limited: Server, media: MediaServer) -> None:
    key = limited.new_key("klimits", "1")
    ak, sk = kling_pair(limited, "klimits")
    body = {"video_url": media.url(VIDEO)}
    first: list[httpx.Response] = []
    with kling_client(limited.url, ak, sk) as c, limited.client(key) as rc:
        waiting = threading.Thread(
            target=lambda: first.append(c.post("/v1/videos/identify-face", json=body))
        )
        waiting.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the first one is queued
            time.sleep(0.3)
            if rc.get(GEN, params={"state": "pending"}).json()["data"]["items"]:
                break
        r = c.post("/v1/videos/identify-face", json=body)
        assert "Too many tasks" in kling_error(r, 429, 1303)["message"]
        waiting.join(30)
        kling_error(first[0], 504, 5002)  # nothing ran it: the deadline answered
        time.sleep(1.1)
        codes = [c.get("/v1/videos/advanced-lip-sync").json()["code"] for _ in range(12)]
        # 5 a second pass; a loaded machine may let a 6th through as the window moves
        assert codes[:5] == [0] * 5 and 1302 in codes and set(codes) == {0, 1302}, codes

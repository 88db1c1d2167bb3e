"""Kling's cloud as an engine, end to end: a real `lipdub serve` (API and worker) whose
account runs on the Kling engine, against the fake Kling (tests/support/fake_kling.py)
on loopback. Each test submits through lipdub's API and checks what the customer sees
(task, faces, result, callback, bill) and what Kling saw (submits, tasks)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.fake_kling import FakeKling

from .helpers import GEN, MEDIA, MediaServer, Receiver, Server, upload_file, wait_task

VIDEO = "videoretalking__face_2.mp4"  # 844x844, 5.04 s: inside Kling's limits
RESULT = "videoretalking__face_3.mp4"  # what the fake "renders": a different real video
AUDIO = "videoretalking__audio_1.wav"  # 5.02 s of speech
ACCOUNT = "kling-acme"
IDENTIFY_MICROS, BLOCK_MICROS = 700, 6300


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeKling]:
    f = FakeKling(result_video=MEDIA / RESULT, processing_after_s=0.2, done_after_s=0.6)
    yield f
    f.close()


@pytest.fixture(autouse=True)
def fresh_fake(fake: FakeKling) -> None:
    """Each test starts from a healthy fake."""
    fake.faults.clear()
    fake.restore()
    fake.outcome = "succeed"
    fake.faces = [None]
    fake.rate_limit_per_s = 0
    fake.max_running = 0


def kling_env(fake: FakeKling) -> dict[str, str]:
    return {
        **fake.env,
        "LIPDUB_KLING_POLL_S": "0.1",
        "LIPDUB_KLING_RETRY_S": "3",
        "LIPDUB_KLING_BACKOFF_S": "0.2",
        "LIPDUB_KLING_BACKOFF_MAX_S": "0.5",
        "LIPDUB_RATE_LIMIT_PER_S": "0",
        "LIPDUB_MAX_TASKS_PER_ACCOUNT": "0",
    }


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeKling
) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("kling"), env=kling_env(fake), workers=2)
    s.env["LIPDUB_PUBLIC_URL"] = s.url  # Kling fetches uploads from lipdub's signed links
    s.start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    key = server.new_key(ACCOUNT, "10")
    out = server.cli("account", "engine", ACCOUNT, "kling")
    assert out.returncode == 0 and "engine kling" in out.stdout, out
    with server.client(key) as c:
        yield c


@pytest.fixture(scope="module")
def audio_url(client: httpx.Client) -> str:
    return upload_file(client, MEDIA / AUDIO)


@pytest.fixture(scope="module")
def session(client: httpx.Client, media_server: MediaServer) -> dict[str, Any]:
    """One Kling-identified session the lip-sync tests share (sessions are reusable)."""
    return identify(client, media_server.url(VIDEO))


def identify(client: httpx.Client, video_url: str, **extra: Any) -> dict[str, Any]:
    r = client.post(GEN, json={"model": "kling-identify-face", "video_url": video_url, **extra})
    assert r.status_code == 200, r.text
    done = wait_task(client, r.json()["data"]["taskId"], timeout=60)
    assert done["state"] == "completed", done
    return done


def submit_sync(
    client: httpx.Client, session: dict[str, Any], audio_url: str, **extra: Any
) -> httpx.Response:
    faces = session["faceData"]
    body = {
        "model": "kling-advanced-lip-sync",
        "session_id": faces["session_id"],
        "face_choose": [{"face_id": faces["face_list"][0]["face_id"], "sound_file": audio_url}],
        **extra,
    }
    return client.post(GEN, json=body)


def sync(client: httpx.Client, session: dict[str, Any], audio_url: str, **extra: Any) -> dict:
    r = submit_sync(client, session, audio_url, **extra)
    assert r.status_code == 200, r.text
    return wait_task(client, r.json()["data"]["taskId"], timeout=60)


def ledger(server: Server, task_id: str) -> list[tuple[str, int]]:
    out = server.cli("account", "show", ACCOUNT, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["ledger"]
    return sorted((e["kind"], e["amount_micros"]) for e in rows if e["task_id"] == task_id)


def upstream_row(server: Server, task_id: str) -> dict[str, Any]:
    engine = create_engine(f"sqlite:///{server.data_dir / 'lipdub.db'}")
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM upstream_tasks WHERE task_id = :t"), {"t": task_id}
        ).mappings().first()
    engine.dispose()
    assert row is not None
    return dict(row)


# lipdub's own price for this clip, whatever the engine: the 5.02 s of audio play on the
# 5 s video, cut at its end within the tolerance, so one 5 s block.
SYNC_MICROS = BLOCK_MICROS


def test_an_uploaded_video_runs_at_kling_with_lipdubs_faces_result_callback_and_bill(
    server: Server, client: httpx.Client, fake: FakeKling, audio_url: str, receiver: Receiver
) -> None:
    video_url = upload_file(client, MEDIA / VIDEO)
    ident = identify(client, video_url)
    # Kling fetched the upload from lipdub's signed link (nothing else was uploaded).
    assert fake.identified[-1].startswith(server.url + "/media/")
    face = ident["faceData"]["face_list"][0]
    kling_face = list(fake.sessions.values())[-1]["faces"][0]  # what the fake answered
    assert [face[k] for k in ("face_id", "start_time", "end_time")] == [
        kling_face[k] for k in ("face_id", "start_time", "end_time")
    ]
    # The face image is Kling's, served by lipdub.
    assert face["face_reference"].startswith(server.url + "/media/")
    assert httpx.get(face["face_reference"]).content == fake.face_image
    assert upstream_row(server, ident["taskId"])["charge"] == fake.charge_identify

    before = fake.submits_created
    done = sync(client, ident, audio_url, callback_url=receiver.url)
    assert done["state"] == "completed", done
    assert fake.submits_created == before + 1
    # The audio went inline, as the very file the client gave (Kling takes WAV).
    sent = fake.submitted[-1]
    assert sent["external_task_id"] == done["taskId"]
    assert sent["session_id"] == upstream_row(server, ident["taskId"])["upstream_session_id"]
    assert "callback_url" not in sent  # lipdub polls; its own callback goes to the client
    fc = sent["face_choose"][0]
    assert base64.b64decode(fc["sound_file"]) == (MEDIA / AUDIO).read_bytes()
    assert (fc["face_id"], fc["sound_insert_time"], fc["sound_volume"]) == ("0", 0, 1.0)
    # The result is Kling's video itself, copied into lipdub's storage.
    url = done["resultUrls"][0]
    assert url.startswith(server.url + "/media/")
    assert httpx.get(url).content == (MEDIA / RESULT).read_bytes()
    hit = receiver.wait(1)[0].json()["data"]
    assert hit["taskId"] == done["taskId"] and hit["state"] == "completed"
    assert json.loads(hit["resultJson"])["resultUrls"][0].startswith(server.url + "/media/")
    # Billed lipdub's price once; Kling's own charge and task id are on record.
    assert ledger(server, done["taskId"]) == [("reserve", SYNC_MICROS), ("settle", SYNC_MICROS)]
    up = upstream_row(server, done["taskId"])
    assert up["upstream_task_id"] in fake.tasks and up["status"] == "succeed"
    assert up["charge"] == fake.charge_sync
    assert fake.tasks[up["upstream_task_id"]].external_task_id == done["taskId"]


def test_a_clients_own_video_url_goes_to_kling_unchanged(
    client: httpx.Client, fake: FakeKling, media_server: MediaServer
) -> None:
    url = media_server.url(VIDEO)
    identify(client, url)
    assert fake.identified[-1] == url


@pytest.mark.parametrize(
    ("code", "fail_code"),
    [
        (1004, "upstream_auth"),
        (1102, "upstream_account"),
        (1103, "upstream_forbidden"),
        (1201, "upstream_invalid_input"),
        (1203, "upstream_not_found"),
        (1301, "content_policy"),
    ],
)
def test_each_kling_error_family_fails_the_task_clearly_and_refunds_it(
    server: Server, client: httpx.Client, fake: FakeKling, session: dict[str, Any],
    audio_url: str, code: int, fail_code: str,
) -> None:
    fake.fail_next("submit", code, "the fake says no")
    done = sync(client, session, audio_url)
    assert done["state"] == "failed"
    assert done["failCode"] == fail_code
    assert f"Kling code {code}: the fake says no" in done["failMsg"]
    assert "refunded" in done["failMsg"]
    assert ledger(server, done["taskId"]) == [("refund", SYNC_MICROS), ("reserve", SYNC_MICROS)]


def test_an_identify_refused_by_kling_is_refunded(
    server: Server, client: httpx.Client, fake: FakeKling, media_server: MediaServer
) -> None:
    fake.fail_next("identify", 1301, "content policy")
    r = client.post(GEN, json={"model": "kling-identify-face",
                               "video_url": media_server.url(VIDEO)})
    done = wait_task(client, r.json()["data"]["taskId"], timeout=60)
    assert (done["state"], done["failCode"]) == ("failed", "content_policy")
    assert ledger(server, done["taskId"]) == [
        ("refund", IDENTIFY_MICROS), ("reserve", IDENTIFY_MICROS)
    ]


def test_outages_and_rate_limits_are_waited_out_and_submit_once(
    server: Server, client: httpx.Client, fake: FakeKling, session: dict[str, Any],
    audio_url: str,
) -> None:
    fake.fail_next("submit", 5001, times=1)
    fake.fail_next("submit", 1302, times=1)
    fake.fail_next("submit", 1303, times=1)
    # Kling timed out (504, 5002) after creating the task: the retry must find it.
    fake.fail_next("submit", 5002, created=True)
    before, posts = fake.submits_created, fake.count("POST", "/v1/videos/advanced-lip-sync")
    done = sync(client, session, audio_url)
    assert done["state"] == "completed", done
    assert fake.submits_created == before + 1
    # Four refused or unanswered tries, each retried; none after the task existed.
    assert fake.count("POST", "/v1/videos/advanced-lip-sync") == posts + 4
    assert ledger(server, done["taskId"]) == [("reserve", SYNC_MICROS), ("settle", SYNC_MICROS)]


def test_an_outage_while_kling_works_is_waited_out(
    client: httpx.Client, fake: FakeKling, session: dict[str, Any], audio_url: str
) -> None:
    fake.done_after_s = 2.5
    try:
        r = submit_sync(client, session, audio_url)
        task_id = r.json()["data"]["taskId"]
        deadline = time.monotonic() + 20
        while not any(t.external_task_id == task_id for t in fake.tasks.values()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        fake.outage(5000)
        time.sleep(1.5)
        fake.restore()
        done = wait_task(client, task_id, timeout=60)
    finally:
        fake.done_after_s = 0.6
    assert done["state"] == "completed", done


def test_kling_concurrency_limit_makes_the_second_task_wait_not_fail(
    server: Server, client: httpx.Client, fake: FakeKling, session: dict[str, Any],
    audio_url: str,
) -> None:
    fake.max_running = 1  # the operator's Kling plan runs one task at a time
    before, seen = fake.submits_created, len(fake.seen)
    ids = [submit_sync(client, session, audio_url).json()["data"]["taskId"] for _ in range(2)]
    done = [wait_task(client, i, timeout=60) for i in ids]
    assert [d["state"] for d in done] == ["completed", "completed"], done
    assert fake.submits_created == before + 2
    # Both ran at once on two worker slots: one was refused (1303) until the other ended.
    assert any(code == 1303 for _, _, _, code in fake.seen[seen:])


@pytest.mark.parametrize(
    ("code", "fail_code"), [(5001, "upstream_unavailable"), (1303, "upstream_busy")]
)
def test_a_lasting_outage_or_rate_limit_fails_after_the_retry_window_with_a_refund(
    server: Server, client: httpx.Client, fake: FakeKling, session: dict[str, Any],
    audio_url: str, code: int, fail_code: str,
) -> None:
    fake.fail_next("submit", code, times=1000)
    started = time.monotonic()
    done = sync(client, session, audio_url)
    assert done["state"] == "failed" and done["failCode"] == fail_code, done
    assert f"Kling code {code}" in done["failMsg"] and "resubmit it later" in done["failMsg"]
    assert 2.0 < time.monotonic() - started < 30  # LIPDUB_KLING_RETRY_S=3
    assert ledger(server, done["taskId"]) == [("refund", SYNC_MICROS), ("reserve", SYNC_MICROS)]


def test_a_task_kling_fails_is_failed_with_its_reason_and_refunded(
    server: Server, client: httpx.Client, fake: FakeKling, session: dict[str, Any],
    audio_url: str,
) -> None:
    fake.outcome = "failed"
    done = sync(client, session, audio_url)
    assert (done["state"], done["failCode"]) == ("failed", "upstream_failed")
    assert fake.fail_msg in done["failMsg"]
    assert ledger(server, done["taskId"]) == [("refund", SYNC_MICROS), ("reserve", SYNC_MICROS)]


def test_several_faces_in_one_task_are_refused_before_anything_is_charged(
    client: httpx.Client, fake: FakeKling, media_server: MediaServer, audio_url: str
) -> None:
    fake.faces = [None, (0, 3000)]
    ident = identify(client, media_server.url(VIDEO))
    ids = [f["face_id"] for f in ident["faceData"]["face_list"]]
    assert ids == ["0", "1"]
    before = client.get("/api/v1/usage").json()["data"]["balance_micros"]
    r = client.post(GEN, json={
        "model": "kling-advanced-lip-sync",
        "session_id": ident["faceData"]["session_id"],
        "face_choose": [{"face_id": i, "sound_file": audio_url} for i in ids],
    })
    assert r.status_code == 400 and "one face per task" in r.json()["msg"], r.text
    assert client.get("/api/v1/usage").json()["data"]["balance_micros"] == before


def test_kling_limits_are_checked_before_the_task_is_accepted(
    client: httpx.Client, media_server: MediaServer, session: dict[str, Any], audio_url: str
) -> None:
    small = client.post(GEN, json={"model": "kling-identify-face",
                                   "video_url": media_server.url("infinitetalk__ref_video.mp4")})
    assert small.status_code == 400 and "between 512 and 2160 px" in small.json()["msg"]
    # Cut at the video's end, 1.5 s of audio play on the face: Kling needs 2 s.
    short = submit_sync(client, session, audio_url, face_choose=[{
        "face_id": "0", "sound_file": audio_url, "sound_insert_time": 3500,
        "sync_mode": "cut_off",
    }])
    assert short.status_code == 400 and "at least 2000 ms" in short.json()["msg"], short.text
    looped = submit_sync(client, session, audio_url, face_choose=[{
        "face_id": "0", "sound_file": audio_url, "sync_mode": "loop",
    }])
    assert looped.status_code == 400 and "plays the clip once" in looped.json()["msg"]


def test_cut_off_audio_is_cut_at_the_videos_end_before_it_goes_to_kling(
    client: httpx.Client, fake: FakeKling, session: dict[str, Any], audio_url: str
) -> None:
    done = sync(client, session, audio_url, face_choose=[{
        "face_id": "0", "sound_file": audio_url, "sound_insert_time": 2000,
        "sync_mode": "cut_off",
    }])
    assert done["state"] == "completed", done
    fc = fake.submitted[-1]["face_choose"][0]
    # The video plays 5000 ms (lipdub's probe, the length its own engine uses): 3000 ms
    # of audio fit after the insert point.
    assert (fc["sound_start_time"], fc["sound_end_time"]) == (0, 3000)


def test_a_kling_client_on_lipdubs_v1_runs_upstream_for_a_kling_engine_account(
    server: Server, client: httpx.Client, fake: FakeKling, media_server: MediaServer
) -> None:
    """Both directions at once: code written for Kling's official API calls lipdub's /v1
    with a JWT from the account's own pair; the account runs on the Kling engine, so the
    work goes on to (fake) Kling once, and the answers keep Kling's shapes."""
    from tests.service.test_kling_api import encode_jwt_token, kling_pair

    ak, sk = kling_pair(server, ACCOUNT)
    headers = {"Authorization": f"Bearer {encode_jwt_token(ak, sk)}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as k:
        r = k.post("/v1/videos/identify-face", json={"video_url": media_server.url(VIDEO)})
        body = r.json()
        assert r.status_code == 200 and body["code"] == 0, body
        assert fake.identified[-1] == media_server.url(VIDEO)  # passed through unchanged
        face = body["data"]["face_data"][0]
        assert face["face_id"] == list(fake.sessions.values())[-1]["faces"][0]["face_id"]
        assert httpx.get(face["face_image"]).content == fake.face_image  # served by lipdub
        before = fake.submits_created
        r = k.post("/v1/videos/advanced-lip-sync", json={
            "session_id": body["data"]["session_id"],
            "face_choose": [{"face_id": face["face_id"],
                             "sound_file": base64.b64encode((MEDIA / AUDIO).read_bytes())
                             .decode(), "sound_start_time": 0, "sound_end_time": 5000,
                             "sound_insert_time": 0}],
        })
        created = r.json()
        assert r.status_code == 200 and created["code"] == 0, created
        task_id = created["data"]["task_id"]
        assert task_id.isdigit()
        deadline = time.monotonic() + 60
        while True:
            got = k.get(f"/v1/videos/advanced-lip-sync/{task_id}").json()["data"]
            if got["task_status"] in ("succeed", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert got["task_status"] == "succeed", got
    assert fake.submits_created == before + 1
    video = got["task_result"]["videos"][0]
    assert video["url"].startswith(server.url + "/media/")
    assert httpx.get(video["url"]).content == (MEDIA / RESULT).read_bytes()

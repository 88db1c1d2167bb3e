"""The Python and JavaScript clients against a live `lipdub serve` with real media: the
snippets of docs/api.md run as written, the async twin, cancel and errors, Standard
Webhooks signatures checked by both, and the contract's own Express receiver, unchanged,
receiving the callbacks of both models."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from lipdub import AsyncClient, Client, verify_webhook
from lipdub.client import ApiError, WebhookVerificationError

from .helpers import MEDIA, REPO, Receiver, Server, free_port, server_fixture

SPEECH = MEDIA / "videoretalking__audio_1.wav"
LONG_VIDEO = MEDIA / "infinitetalk__ref_video.mp4"
SEED = REPO.parent / "shared" / "seed" / "kling-lip-sync-api.zh.txt"
NODE_PATH = REPO / ".venv" / "node" / "node_modules"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")


server = server_fixture("clients", env={"LIPDUB_CALLBACK_TIME_SCALE": "0.01"})


def snippet(lang: str) -> str:
    """The fenced block after '<!-- snippet: LANG -->' in docs/api.md."""
    text = (REPO / "docs" / "api.md").read_text()
    m = re.search(rf"<!-- snippet: {lang} -->\n```\w+\n(.*?)\n```", text, re.S)
    assert m, f"no {lang} snippet in docs/api.md"
    return m.group(1)


def snippet_env(server: Server, key: str, video: Path) -> dict[str, str]:
    return {**os.environ, "LIPDUB_URL": server.url, "LIPDUB_KEY": key, "VIDEO": str(video),
            "AUDIO": str(SPEECH)}


def check_snippet_output(out: str, server: Server, key: str) -> None:
    lines = out.strip().splitlines()
    state, url = lines[0].split()
    assert state == "completed" and url.startswith(server.url + "/media/"), out
    r = httpx.get(url, timeout=60)
    assert r.status_code == 200 and r.content[4:8] == b"ftyp"  # an MP4
    assert lines[-1].startswith("balance ") and int(lines[-1].split()[1]) < 1_000_000


def test_python_snippet_from_the_docs(server: Server, short_clip: Path) -> None:
    key = server.new_key("docs-py", "1")
    r = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-c", snippet("python")],
        env=snippet_env(server, key, short_clip), capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    check_snippet_output(r.stdout, server, key)
    with Client(server.url, key) as c:
        tasks = list(c.iter_tasks())
        assert [t["model"] for t in tasks] == ["kling-advanced-lip-sync", "kling-identify-face"]
        assert tasks[0]["externalTaskId"] == "docs-python-1"


@needs_node
def test_javascript_snippet_from_the_docs(server: Server, short_clip: Path) -> None:
    key = server.new_key("docs-js", "1")
    r = subprocess.run(
        [str(NODE), "--input-type=module", "-e", snippet("javascript")],
        cwd=REPO, env=snippet_env(server, key, short_clip), capture_output=True, text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    check_snippet_output(r.stdout, server, key)


def test_async_client_cancel_errors_and_webhook_signatures(
    server: Server, short_clip: Path
) -> None:
    key = server.new_key("signed", "1")
    out = server.cli("account", "webhook-secret", "signed")
    secret = out.stdout.strip().splitlines()[-1]
    receiver = Receiver()

    async def flow() -> tuple[dict[str, object], dict[str, object]]:
        async with AsyncClient(server.url, key) as c:
            created = await c.identify(short_clip, callback_url=receiver.url)
            long = await c.identify(LONG_VIDEO)
            cancelled = await c.cancel(long["taskId"])
            assert cancelled["failCode"] == "cancelled"
            with pytest.raises(ApiError) as e:
                await c.cancel(long["taskId"])
            assert e.value.status == 400 and "already failed" in e.value.message
            with pytest.raises(ApiError) as e:
                await c.get("cl-nope")
            assert e.value.status == 404
            done = await c.wait(str(created["taskId"]))
            page = await c.list(limit=1)
            assert page["next_cursor"] and len(page["items"]) == 1
            usage = await c.usage()
            return done, usage

    try:
        done, usage = asyncio.run(flow())
        assert done["state"] == "completed" and usage["total_micros"] == 700
        hit = receiver.wait(1)[0]
        payload = verify_webhook(secret, hit.headers, hit.body)
        assert payload["data"]["taskId"] == done["taskId"]
        assert Client.verify_webhook is verify_webhook
        with pytest.raises(WebhookVerificationError):
            verify_webhook(secret, hit.headers, hit.body.replace(b"completed", b"failed___"))
        with pytest.raises(WebhookVerificationError):
            verify_webhook(secret, hit.headers, hit.body, now=time.time() + 3600)
        if NODE is not None:  # the JavaScript verifier agrees, and refuses a forgery
            script = """
import { verifyWebhook } from './clients/js/lipdub.mjs'
const [secret, headers, body] = JSON.parse(process.env.HIT)
console.log(verifyWebhook(secret, headers, body).data.taskId)
try { verifyWebhook(secret, headers, body + ' ') } catch (e) { console.log(e.constructor.name) }
"""
            hit_json = json.dumps([secret, hit.headers, hit.body.decode()])
            r = subprocess.run(
                [NODE, "--input-type=module", "-e", script], cwd=REPO, capture_output=True,
                text=True, timeout=60, env={**os.environ, "HIT": hit_json},
            )
            assert r.stdout.split() == [done["taskId"], "WebhookVerificationError"], r.stderr
    finally:
        receiver.close()


@needs_node
def test_javascript_client_cancel_list_and_errors(server: Server) -> None:
    key = server.new_key("js-calls", "1")
    script = """
import { Client, ApiError } from './clients/js/lipdub.mjs'
const c = new Client(process.env.LIPDUB_URL, process.env.LIPDUB_KEY)
const t = await c.identify(process.env.VIDEO)
const x = await c.cancel(t.taskId)
const page = await c.list({ state: 'failed' })
let status = 0
try { await c.get('cl-nope') } catch (e) { status = e instanceof ApiError ? e.status : -1 }
const u = await c.usage({ days: 7 })
const ids = page.items.map((i) => i.taskId)
console.log(JSON.stringify([x.failCode, ids, status, u.reserved_micros]))
"""
    env = {**os.environ, "LIPDUB_URL": server.url, "LIPDUB_KEY": key, "VIDEO": str(LONG_VIDEO)}
    r = subprocess.run([str(NODE), "--input-type=module", "-e", script], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    code, ids, status, reserved = json.loads(r.stdout)
    assert code == "cancelled" and len(ids) == 1 and status == 404 and reserved == 0


@needs_node
def test_the_contracts_express_receiver_runs_unchanged_for_both_models(
    server: Server, short_clip: Path
) -> None:
    harness = REPO / "clients" / "js" / "test" / "seed-receiver.cjs"
    code = harness.read_text()
    ours = code.split("// --- seed: begin\n")[1].split("// --- seed: end")[0].strip()
    if SEED.is_file():  # the receiver is the seed's, character for character
        seed = SEED.read_text()
        start = seed.index("app.post('/webhook/kling-lip-sync'")
        assert seed[start : start + len(ours)] == ours
    assert NODE_PATH.is_dir(), "make test installs express into .venv/node"
    port = free_port()
    log = open(server.data_dir / "express.log", "w+")  # noqa: SIM115 - read after the run
    env = {**os.environ, "NODE_PATH": str(NODE_PATH)}
    proc = subprocess.Popen([str(NODE), str(harness), str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    try:
        hook = f"http://127.0.0.1:{port}/webhook/kling-lip-sync"
        deadline = time.monotonic() + 20
        while "listening" not in Path(log.name).read_text():
            assert time.monotonic() < deadline and proc.poll() is None, Path(log.name).read_text()
            time.sleep(0.1)
        with Client(server.url, server.new_key("express", "1")) as c:
            ident = c.wait(c.identify(short_clip, callback_url=hook)["taskId"])
            faces = ident["faceData"]
            sync = c.wait(c.lip_sync(
                faces["session_id"],
                [{"face_id": faces["face_list"][0]["face_id"], "sound_file": SPEECH,
                  "sound_end_time": 2000}],
                callback_url=hook,
            )["taskId"])
            assert sync["state"] == "completed", sync
            for task in (ident, sync):  # Express answered 200 at the first attempt
                deadline = time.monotonic() + 20
                while (cb := c.get(task["taskId"])["callback"])["state"] == "pending":
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                assert cb["state"] == "delivered" and cb["attempts"] == 1, cb
                assert cb["lastStatus"] == 200
        lines = Path(log.name).read_text().splitlines()
        assert f"lip-sync ready {ident['taskId']} undefined" in lines
        assert f"lip-sync ready {sync['taskId']} {sync['resultUrls'][0]}" in lines
        assert not any("Error" in line for line in lines), lines
    finally:
        proc.kill()
        proc.wait()
        log.close()

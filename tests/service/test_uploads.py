"""Uploads against a real `lipdub serve`: server-made keys whatever the client's file name,
quotas, and the balance rule (issue 8, cases 1 and 3)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from .helpers import Server

FILES = "/api/v1/files"
BOUNDARY = b"lipdubTestBoundary7MA4YWxk"

# Every kind of name that can reach a file system: traversal, separators, NUL, length,
# Unicode look-alikes of dots and slashes, Windows device names, header injection.
HOSTILE_NAMES = [
    "..",
    ".",
    "/",
    "\\",
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/hostname",
    "a\x00b.mp4",
    "\x00",
    "x" * 5000,
    "\u2024\u2024",  # ONE DOT LEADER twice: looks like ".."
    "\uff0e\uff0e\uff0fetc",  # fullwidth "../etc"
    "..\u2215..\u2215x",  # DIVISION SLASH
    "CON",
    "NUL",
    "aux.txt",
    "COM1",
    "uploads",
    "",
    " ",
    "clip.mp4\r\nX-Injected: 1",
    "e\u0301\U0001f600.mp4",
]


def multipart(name: str, content: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand, so the name reaches the server byte for byte."""
    head = (
        b'Content-Disposition: form-data; name="file"; filename="'
        + name.encode("utf-8", "surrogatepass")
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    body = b"--" + BOUNDARY + b"\r\n" + head + content + b"\r\n--" + BOUNDARY + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}


def upload(c: httpx.Client, name: str, content: bytes) -> httpx.Response:
    body, headers = multipart(name, content)
    return c.post(FILES, content=body, headers=headers)


def stored_names(server: Server) -> list[str]:
    root = server.data_dir / "media" / "uploads"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def assert_uploads_work(server: Server, key: str, payload: bytes) -> str:
    with server.client(key) as c:
        r = upload(c, "ordinary.mp4", payload)
    assert r.status_code == 200, r.text
    url: str = r.json()["data"]["url"]
    assert httpx.get(url).content == payload
    return url


def test_hostile_file_names_never_reach_a_path(tmp_path: Path, db_url: str) -> None:
    env = {"LIPDUB_DATABASE_URL": db_url, "LIPDUB_SIGNING_KEY": "uploads-test"}
    data_dir = tmp_path / "up"
    server = Server(data_dir, env=env, workers=0).start()
    accepted: list[tuple[str, bytes]] = []
    try:
        key = server.new_key("attacker", "0.01")
        with server.client(key) as c:
            # ".." first, on a fresh instance: it used to turn media/uploads into a file.
            for i, name in enumerate(HOSTILE_NAMES):
                payload = f"payload {i}".encode()
                r = upload(c, name, payload)
                assert r.status_code in (200, 400), (name, r.text)
                body = r.json()
                assert body["code"] == r.status_code and body["msg"], body
                if r.status_code == 200:
                    data = body["data"]
                    assert data["size"] == len(payload)
                    # The name is metadata: kept (without control characters), never a path.
                    assert "\x00" not in data["name"] and len(data["name"]) <= 255
                    assert re.fullmatch(r".*/media/uploads/[0-9a-f]{32}\?e=\d+&s=.+", data["url"])
                    assert httpx.get(data["url"]).content == payload
                    accepted.append((data["url"], payload))
        assert len(accepted) >= len(HOSTILE_NAMES) - 2  # only the CR/LF name may be refused
        # Every stored file has a name the server made, and nothing else is there.
        names = stored_names(server)
        assert names and all(re.fullmatch(r"[0-9a-f]{32}", n) for n in names), names
        assert (data_dir / "media" / "uploads").is_dir()
        # Every account can still upload.
        assert_uploads_work(server, server.new_key("bystander", "0.01"), b"bystander")
    finally:
        server.kill()
    # ... and after a restart, and the earlier links still serve their bytes.
    again = Server(data_dir, env=env, workers=0).start()
    try:
        assert_uploads_work(again, again.new_key("after-restart", "0.01"), b"restarted")
        for url, payload in accepted[:3]:
            moved = again.url + "/media/" + url.split("/media/", 1)[1]
            assert httpx.get(moved).content == payload
    finally:
        again.kill()


def test_a_names_metadata_is_kept(tmp_path: Path) -> None:
    server = Server(tmp_path / "meta", workers=0).start()
    try:
        with server.client(server.new_key("meta", "0.01")) as c:
            r = upload(c, "a\x00b.mp4", b"abc")
            assert r.json()["data"]["name"] == "ab.mp4"
            r = c.post(FILES, files={"file": ("Résumé clip.mp4", b"abc", "video/mp4")})
            assert r.status_code == 200 and r.json()["data"]["name"] == "Résumé clip.mp4"
    finally:
        server.kill()


def test_uploads_need_a_positive_balance(tmp_path: Path) -> None:
    server = Server(tmp_path / "zero", workers=0).start()
    try:
        with server.client(server.new_key("broke", "0")) as c:
            r = c.post(FILES, files={"file": ("a.mp4", b"\0" * 100_000)})
        assert r.status_code == 402 and r.json()["code"] == 402, r.text
        msg = r.json()["msg"]
        assert "positive balance" in msg and "add credits" in msg, msg
        assert "$0.0000" not in msg and "smallest" not in msg, msg  # issue 23
        assert stored_names(server) == []
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LIPDUB_MAX_UPLOAD_BYTES_PER_DAY": "3000"}, "Upload allowance used"),
        ({"LIPDUB_MAX_STORED_BYTES_PER_ACCOUNT": "3000"}, "Storage allowance used"),
    ],
)
def test_upload_quotas_answer_429(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    server = Server(tmp_path / "quota", env=env, workers=0).start()
    try:
        with server.client(server.new_key("heavy", "1")) as c:
            assert upload(c, "a", b"1" * 2000).status_code == 200
            r = upload(c, "b", b"2" * 2000)
            assert r.status_code == 429 and r.json()["code"] == 429, r.text
            assert needle in r.json()["msg"] and r.headers["retry-after"]
        assert len(stored_names(server)) == 1  # the refused upload left nothing behind
        # Another account's allowance is its own.
        assert_uploads_work(server, server.new_key("light", "1"), b"3" * 2000)
    finally:
        server.kill()


def test_malformed_uploads_are_400(tmp_path: Path) -> None:
    server = Server(tmp_path / "bad", workers=0).start()
    try:
        with server.client(server.new_key("bad", "1")) as c:
            r = c.post(FILES, content=b"just bytes", headers={"Content-Type": "video/mp4"})
            assert r.status_code == 400 and "multipart/form-data" in r.json()["msg"]
            body, headers = multipart("x.mp4", b"abc")
            r = c.post(FILES, content=body[:-30], headers=headers)  # cut before the end
            assert r.status_code == 400, r.text
            r = c.post(FILES, files={"other": ("x.mp4", b"abc")})
            assert r.status_code == 400 and "no part named 'file'" in r.json()["msg"]
        assert stored_names(server) == []
    finally:
        server.kill()

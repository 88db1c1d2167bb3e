"""Real things for service tests: a `lipdub serve` subprocess, an HTTP receiver that
records callbacks, and a media server with redirects, big and slow files."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MEDIA as MEDIA  # re-exported: the service tests import both from here
from tests.conftest import REPO as REPO

# The contract's task endpoint, which nearly every service test calls.
GEN = "/api/v1/audio/generations"
PG_URL = os.environ.get("LIPDUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lipdub_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("lipdub")
    return (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "from lipdub.cli import main; main()"]
    )


class Server:
    """`lipdub serve` on a free loopback port, with its own data dir and environment."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, workers: int = 1):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LIPDUB_DATA_DIR": str(data_dir),
            "LIPDUB_ALLOW_PRIVATE_URLS": "127.0.0.1/32",
            "LIPDUB_WORKERS": str(workers),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = (self.data_dir / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [*lipdub_cmd(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.read_log()[-2000:]}")
            try:
                # 503 is a server that runs but is low on disk (the disk tests start so).
                if httpx.get(self.url + "/healthz", timeout=1).status_code in (200, 503):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.read_log()[-2000:]}")

    def read_log(self) -> str:
        return (self.data_dir / "serve.log").read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def cli_args(self, *args: str) -> list[str]:
        return [*lipdub_cmd(), *args]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*lipdub_cmd(), *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def new_key(self, account: str, usd: str = "10") -> str:
        out = self.cli("keys", "create", account, "--credits", usd)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )


def upload_file(client: httpx.Client, path: Path) -> str:
    """Upload a local file through the API; its ``/media`` URL."""
    with path.open("rb") as f:
        r = client.post("/api/v1/files", files={"file": (path.name, f)})
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["url"])


def wait_task(client: httpx.Client, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/api/v1/audio/generations", params={"task_id": task_id})
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        if data["state"] in ("completed", "failed"):
            return data
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish in {timeout} s")


@dataclass
class Hit:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A callback receiver: answers ``statuses`` in turn (then 200) and records each hit."""

    statuses: list[int] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    # A receiver that hangs: it reads the request, then answers only when released.
    hang: bool = False
    # Paths that hang while the others answer at once: endpoints of several accounts
    # behind one host:port (a webhook gateway).
    hang_paths: set[str] = field(default_factory=set)
    # Requests hanging right now (until released or the sender hangs up), and the most
    # ever at once.
    hanging: int = 0
    max_hanging: int = 0

    def __post_init__(self) -> None:
        recv = self
        self.released = threading.Event()
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                recv.hits.append(
                    Hit(
                        time.monotonic(),
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                if recv.hang or self.path in recv.hang_paths:
                    with lock:
                        recv.hanging += 1
                        recv.max_hanging = max(recv.max_hanging, recv.hanging)
                    try:
                        if self._hang():
                            return  # the sender gave up: nobody to answer
                    finally:
                        with lock:
                            recv.hanging -= 1
                status = recv.statuses.pop(0) if recv.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/moved")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def _hang(self) -> bool:
                """Answer nothing until released; True if the sender hung up meanwhile."""
                deadline = time.monotonic() + 60
                while not recv.released.is_set() and time.monotonic() < deadline:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        self.close_connection = True
                        return True
                return False

            def log_message(self, *a: Any) -> None:
                pass

        self.server = _BusyServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base + "/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hits_at(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def wait(self, n: int, timeout: float = 30.0) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while len(self.hits) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.hits) >= n, (
            f"expected {n} callbacks, got {[round(h.at - self.hits[0].at, 3) for h in self.hits]}"
        )
        return self.hits

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


class MediaServer:
    """Serves ../shared/media at /m/<name>; /redirect?to=URL; /big (no length, endless);
    /slow (trickles); /bytes/<n> (declared length n)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                p = self.path
                if p.startswith("/m/"):
                    f = MEDIA / p[3:]
                    if not f.is_file():
                        return self._send(404, b"missing")
                    return self._send(200, f.read_bytes())
                if p.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", p.split("=", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if p.startswith("/loop"):
                    self.send_response(302)
                    self.send_header("Location", "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if p == "/big":
                    # No Content-Length: the cap must be enforced while streaming.
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        for _ in range(4096):
                            self.wfile.write(b"\0" * 65536)
                    except OSError:
                        pass
                    return None
                if p.startswith("/bytes/"):
                    self.send_response(200)
                    self.send_header("Content-Length", p.split("/")[-1])
                    self.end_headers()
                    return None
                if p == "/slow":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    try:
                        for _ in range(100):
                            self.wfile.write(b"\0" * 100)
                            self.wfile.flush()
                            time.sleep(0.5)
                    except OSError:
                        pass
                    return None
                return self._send(404, b"missing")

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # The client may hang up (e.g. it refused an oversize file): fine.
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"{self.base}/m/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _BusyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connect at once


class TrickleServer:
    """A source that trickles: GET /t/<tag> declares 1 MB, then sends one byte every
    ``interval_s`` until the client hangs up or ``close()``. Records which tags connected,
    how many are being served right now and the most at once."""

    def __init__(self, interval_s: float = 0.1, max_s: float = 60.0) -> None:
        self.seen: list[str] = []
        self.active = 0
        self.max_active = 0  # the most sources served at once
        self._lock = threading.Lock()
        self._closing = threading.Event()
        trickle = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                with trickle._lock:
                    trickle.seen.append(self.path.rsplit("/", 1)[-1])
                    trickle.active += 1
                    trickle.max_active = max(trickle.max_active, trickle.active)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    deadline = time.monotonic() + max_s
                    while time.monotonic() < deadline and not trickle._closing.is_set():
                        self.wfile.write(b"\0")
                        self.wfile.flush()
                        time.sleep(interval_s)
                except OSError:
                    pass  # the client cut us off: what the service should do
                finally:
                    with trickle._lock:
                        trickle.active -= 1
                    self.close_connection = True

            def log_message(self, *a: Any) -> None:
                pass

        self.server = _BusyServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, tag: str) -> str:
        return f"{self.base}/t/{tag}"

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def server_fixture(
    name: str, env: dict[str, str] | None = None, workers: int = 1
) -> Callable[..., Iterator[Server]]:
    """A module's ``server`` fixture: one `lipdub serve` for the whole module, on a data
    directory of its own, with ``env`` added to its environment::

        server = server_fixture("limits", workers=0, env={"LIPDUB_RATE_LIMIT_PER_S": "20"})
    """

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        s = Server(tmp_path_factory.mktemp(name), env=env, workers=workers).start()
        yield s
        s.kill()

    return server

"""Real network faults for service tests: a TCP proxy that can cut, refuse or black-hole
connections to a real server (PostgreSQL, the S3 server), and a moto S3 server.

The service under test connects to the proxy's port instead of the server's; the test
flips the proxy's mode at the moment that matters. Nothing in the service is replaced.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from .helpers import free_port


class FaultProxy:
    """Forwards 127.0.0.1:<port> to ``target``. Modes: ``pass`` (forward), ``refuse``
    (accept and close at once: like a database that is down), ``blackhole`` (accept,
    never answer: like a network path that hangs). ``cut()`` drops every open connection
    (like pg_terminate_backend or a NAT that forgot them)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            mode = self.mode
            if mode == "refuse":
                client.close()
                continue
            with self._lock:
                self._conns.append(client)
            if mode == "blackhole":
                continue  # held open, never forwarded, until cut() or close()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.append(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    @contextlib.contextmanager
    def outage(self, mode: str = "refuse") -> Iterator[None]:
        """Cut what is open and keep ``mode`` until the block ends."""
        self.mode = mode
        self.cut()
        try:
            yield
        finally:
            self.mode = "pass"
            if mode == "blackhole":
                self.cut()

    def outage_for(self, seconds: float, mode: str = "refuse") -> threading.Thread:
        """An outage in the background, starting now."""

        def run() -> None:
            with self.outage(mode):
                time.sleep(seconds)

        th = threading.Thread(target=run, daemon=True)
        th.start()
        return th

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()


class S3Server:
    """moto's S3 server on a loopback port, with a fresh bucket per ``bucket()``."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def apply_env(self, endpoint: str | None = None) -> dict[str, str]:
        env = {**self.env, **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {})}
        os.environ.update(env)
        return env

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id="test",
            aws_secret_access_key="test", region_name="us-east-1",
        )

    def bucket(self) -> str:
        name = "lipdub-" + uuid.uuid4().hex[:10]
        self.client().create_bucket(Bucket=name)
        return name

    def close(self) -> None:
        self.server.stop()

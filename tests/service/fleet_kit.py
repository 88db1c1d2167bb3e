"""A fleet on one machine, as it would run on several: an API process (`lipdub serve
--workers 0`) and `lipdub worker` processes, each with its own data and scratch
directory (no shared disk), on PostgreSQL and an S3-compatible server (moto), each
reached through a fault proxy the test can cut."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from .conftest import through
from .faults import FaultProxy, S3Server
from .helpers import PG_URL, Server, lipdub_cmd


class Fleet:
    def __init__(
        self, root: Path, pg_url: str, s3: S3Server, extra_env: dict[str, str] | None = None
    ) -> None:
        from sqlalchemy.engine import make_url

        self.root = root
        pg = make_url(PG_URL)
        self.db_proxy = FaultProxy(pg.host or "127.0.0.1", pg.port or 5432)
        self.s3_proxy = FaultProxy("127.0.0.1", s3.port)
        self.bucket = s3.bucket()
        self.db_url = through(self.db_proxy, pg_url)
        env = {
            **s3.env,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_proxy.port}",
            "LIPDUB_DATABASE_URL": self.db_url,
            "LIPDUB_STORAGE_URL": f"s3://{self.bucket}/media",
            "LIPDUB_SIGNING_KEY": "the-fleet-signing-key",
            "LIPDUB_ALLOW_PRIVATE_URLS": "127.0.0.1/32",
            "LIPDUB_MAX_TASKS_PER_ACCOUNT": "0",
            "LIPDUB_RATE_LIMIT_PER_S": "0",
            **(extra_env or {}),
        }
        self.api = Server(root / "api", env=env, workers=0)
        self.api.env["LIPDUB_PUBLIC_URL"] = self.api.url
        self.workers: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> Fleet:
        self.api.start()
        return self

    def worker_dir(self, i: int) -> Path:
        return self.root / f"worker{i}"

    def start_worker(self, i: int) -> subprocess.Popen[bytes]:
        """Worker ``i`` with a data directory of its own (its scratch and nothing else)."""
        d = self.worker_dir(i)
        d.mkdir(parents=True, exist_ok=True)
        env = {**self.api.env, "LIPDUB_DATA_DIR": str(d), "LIPDUB_WORKERS": "1"}
        log = (d / "worker.log").open("ab")
        proc = subprocess.Popen([*lipdub_cmd(), "worker"], env=env, stdout=log, stderr=log)
        self.workers[i] = proc
        return proc

    def signal(self, i: int, sig: int) -> None:
        proc = self.workers[i]
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        if sig == signal.SIGKILL:
            proc.wait(15)

    def log(self, i: int) -> str:
        return (self.worker_dir(i) / "worker.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.workers.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.api.kill()
        self.db_proxy.close()
        self.s3_proxy.close()

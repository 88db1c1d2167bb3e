"""Property-based fuzzing of the live API from its own /openapi.json: no input may
produce a 500 (schemathesis's not_a_server_error check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .helpers import Server


def test_fuzzing_finds_no_server_error(tmp_path: Path) -> None:
    server = Server(tmp_path / "fuzz", workers=0).start()
    try:
        key = server.new_key("fuzz", "1")
        st = Path(sys.executable).with_name("st")
        out = subprocess.run(
            [
                str(st),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "-H",
                f"Authorization: Bearer {key}",
                "--max-examples",
                "40",
                "--seed",
                "1",
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "--max-time",
                "40",
                "--generation-deterministic",
            ],
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
        assert server.alive()
        assert "500" not in server.read_log() or "Internal error" not in server.read_log()
    finally:
        server.kill()

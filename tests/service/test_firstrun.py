"""A first run as a new user makes it: `make run` (serve --dev-key) on an empty store
prints its URL, a key once and a curl walk-through that, pasted into a shell, gives a
dubbed MP4. Split deployments left at single-machine defaults warn."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import av
import pytest

from .helpers import REPO, free_port, lipdub_cmd


def clean_env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
    return {**env, **more}


def start_serve(cwd: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    out = cwd / f"serve-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [*lipdub_cmd(), "serve", "--port", str(port), "--dev-key"],
        cwd=cwd, env=clean_env(), stdout=out.open("wb"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while "listening on" not in out.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(0.1)
    time.sleep(1.0)  # the banner comes once the port is bound, just before uvicorn serves
    return proc, out


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_make_run_prints_a_key_once_and_a_walkthrough_that_works_as_pasted(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc, log = start_serve(tmp_path, port)
    try:
        text = log.read_text()
        assert f"listening on http://127.0.0.1:{port}" in text
        key = re.search(r"^\s+(ld_\S+)$", text, re.M)
        assert key, text
        assert "lipdub keys create NAME --credits 5" in text
        start = text.index("KEY=")
        walkthrough = text[start : text.index("esac", start) + 4]
        assert key.group(1) in walkthrough and "/api/v1/files" in walkthrough
        run = subprocess.run(["bash", "-c", walkthrough], cwd=tmp_path, capture_output=True,
                             text=True, timeout=400)
        assert run.returncode == 0 and "wrote dubbed.mp4" in run.stdout, run.stdout + run.stderr
        with av.open(str(tmp_path / "dubbed.mp4")) as c:
            assert c.streams.video and c.streams.audio
            assert abs(float(c.duration or 0) / 1e6 - 5.04) < 0.15
    finally:
        stop(proc)
    # The next start shows no key (it was shown once) and says where keys come from.
    proc, log = start_serve(tmp_path, port)
    stop(proc)
    text = log.read_text()
    assert "ld_" not in text and "lipdub keys list" in text


def test_make_run_does_not_reinstall_when_nothing_changed() -> None:
    stamp = REPO / ".venv" / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < (REPO / "pyproject.toml").stat().st_mtime:
        pytest.skip("the install stamp is not fresh here (make run / make test create it)")
    plan = subprocess.run(["make", "-n", "run"], cwd=REPO, capture_output=True, text=True)
    assert "pip install" not in plan.stdout and "lipdub serve" in plan.stdout, plan.stdout


def test_split_deployment_left_at_defaults_refuses_in_one_line(tmp_path: Path) -> None:
    """A worker started with every shared setting at its default, before any API, refuses
    to start with one line that says what to do (the fleet check of issue 9)."""
    proc = subprocess.run([*lipdub_cmd(), "worker"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "start 'lipdub serve' first" in lines[0]

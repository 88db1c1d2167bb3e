"""Issue 23, item 6: the command line's first-run rough edges, run as a user would."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import MEDIA, REPO, Server, free_port, lipdub_cmd

COMMANDS = [
    ("identify",), ("sync",), ("serve",), ("worker",), ("keys", "create"), ("keys", "list"),
    ("credits", "add"), ("account", "show"),
]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*lipdub_cmd(), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "100", **(env or {})})


def rows(help_text: str) -> list[str]:
    """The lines of the help's panels (arguments and options), not its free text."""
    return [line for line in help_text.splitlines() if line.startswith("│")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_flags_show_no_type(command: tuple[str, ...]) -> None:
    out = run(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "<bool>" not in out.stdout, out.stdout
    help_row = next(r for r in rows(out.stdout) if "--help" in r)
    assert "<" not in help_row, help_row


def test_sync_help_lists_every_option_as_an_option() -> None:
    out = run("sync", "--help")
    assert out.returncode == 0, out.stderr
    table = rows(out.stdout)
    names = ["VIDEO", "AUDIO", "--out", "--session", "--preview", "--json", "--face",
             "--start-ms", "--end-ms", "--insert-ms", "--volume", "--sync-mode",
             "--original-volume", "--help"]
    for name in names:
        assert any(re.search(rf"(^|\s){re.escape(name)}\s", r) for r in table), (name, out.stdout)
    assert "Usage: lipdub sync [OPTIONS] {VIDEO} [AUDIO]" in out.stdout
    assert "cut_off|loop|bounce|silence|remap" in out.stdout
    assert "Per face" in out.stdout  # the options that follow AUDIO or a --face


def test_serve_on_a_busy_port_fails_before_saying_it_listens(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = Server(tmp_path / "busy")
        out = subprocess.run(
            [*lipdub_cmd(), "serve", "--host", "127.0.0.1", "--port", str(port), "--dev-key"],
            env=s.env, capture_output=True, text=True, timeout=60,
        )
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "listening" not in out.stdout + out.stderr
    assert "First start" not in out.stdout  # no dev key printed for a server that never ran
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"Port {port} on 127.0.0.1 is already in use" in lines[0]
    assert f"--port {port + 1}" in lines[0] and f"make run PORT={port + 1}" in lines[0]
    assert "Errno" not in lines[0] and "Traceback" not in out.stderr


def test_identify_on_a_still_image_says_it_is_an_image() -> None:
    for image in ("facerecognition__obama.jpg", "facerecognition__lin-manuel-miranda.png"):
        out = run("identify", str(MEDIA / image))
        assert out.returncode == 2, out.stdout
        assert f"{image} is a still image (one frame), not a video" in out.stderr, out.stderr
        assert "no face" not in out.stderr.lower()


@pytest.mark.parametrize("content", [b"", b"this is plain text, not audio at all\n" * 50],
                         ids=["empty", "junk"])
def test_cli_errors_speak_of_files_not_uploads(tmp_path: Path, content: bytes) -> None:
    audio = tmp_path / "speech.mp3"
    audio.write_bytes(content)
    out = run("sync", str(MEDIA / "videoretalking__face_2.mp4"), str(audio),
              "-o", str(tmp_path / "o.mp4"), timeout=300)
    assert out.returncode == 2, out.stdout
    line = out.stderr.strip()
    assert line.startswith("error: speech.mp3 is") and len(line.splitlines()) == 1, line
    assert "upload" not in line.lower(), line
    assert not re.search(r"\(\w*(Error|Exception)\)", line), line  # no exception class names


def first_start(tmp_path: Path, **env: str) -> str:
    """The banner of `serve --dev-key` (make run) on an empty data directory."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
    tmp_path.mkdir(parents=True)
    log = tmp_path / "serve.log"
    port = free_port()
    proc = subprocess.Popen(
        [*lipdub_cmd(), "serve", "--port", str(port), "--dev-key"], cwd=tmp_path,
        env={**clean, "LIPDUB_DATA_DIR": str(tmp_path / "data"), **env},
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "esac" not in log.read_text() and "lipdub keys list" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    return log.read_text()


def test_first_run_says_how_to_allow_local_callbacks(tmp_path: Path) -> None:
    text = first_start(tmp_path / "default")
    assert "LIPDUB_ALLOW_PRIVATE_URLS=127.0.0.1/32" in text, text
    assert "First start" in text  # the same banner, with its key and walk-through
    allowed = first_start(tmp_path / "allowed", LIPDUB_ALLOW_PRIVATE_URLS="127.0.0.1/32")
    assert "LIPDUB_ALLOW_PRIVATE_URLS" not in allowed, allowed


def test_readme_says_how_to_pick_another_port() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make run PORT=" in readme
    assert "LIPDUB_ALLOW_PRIVATE_URLS=127.0.0.1/32" in readme

"""Start-up checks and explicit migrations (issue 9, defects 6 and 7).

A worker with its own data directory used to start and then fail the tasks it took
(fastest, so most of them); nothing checked that API and workers share storage, signing
key and public URL. ``alembic upgrade head`` did not work, and a database at a newer
revision made every process exit with alembic's traceback.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from lipdub.service.store.db import head_revision

from .helpers import REPO, Server, lipdub_cmd


def run_worker(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*lipdub_cmd(), "worker"], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture()
def api(tmp_path: Path) -> Server:
    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    server = Server(tmp_path / "api", env={"LIPDUB_DATABASE_URL": db,
                                          "LIPDUB_SIGNING_KEY": "fleet-key"}, workers=0)
    server.env["LIPDUB_PUBLIC_URL"] = server.url
    server.start()
    yield server
    server.kill()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"LIPDUB_DATA_DIR": "own"}, "is not the fleet's storage"),
        ({"LIPDUB_SIGNING_KEY": "another-key"}, "signing key differs"),
        ({"LIPDUB_PUBLIC_URL": ""}, "loopback default"),
        ({"LIPDUB_STORAGE_URL": "s3://"}, "names no bucket"),
    ],
)
def test_a_worker_that_does_not_match_the_fleet_refuses_to_start(
    api: Server, tmp_path: Path, change: dict[str, str], needle: str
) -> None:
    env = {**api.env, **change}
    if "LIPDUB_DATA_DIR" in change:
        env["LIPDUB_DATA_DIR"] = str(tmp_path / "own")
    if change.get("LIPDUB_PUBLIC_URL") == "":
        del env["LIPDUB_PUBLIC_URL"]
    out = run_worker(env)
    assert out.returncode == 2, out
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], out.stderr


def test_a_matching_worker_starts(api: Server) -> None:
    proc = subprocess.Popen(
        [*lipdub_cmd(), "worker"], env=api.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "slot(s)" in proc.stdout.readline()  # printed once the checks passed
    finally:
        proc.terminate()
        proc.wait(20)


def test_db_commands_and_the_alembic_tool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    env = {"LIPDUB_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}

    def lipdub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*lipdub_cmd(), *args], env=env, capture_output=True, text=True)

    head = head_revision()  # the newest migration, whichever branch added it
    assert f"schema revision none -> {head}" in lipdub("db", "upgrade").stdout
    current = lipdub("db", "current").stdout.split()
    assert current == ["database:", head, "this", "lipdub:", head]
    assert f"{head} -> 0002" in lipdub("db", "downgrade", "0002").stdout
    alembic = Path(lipdub_cmd()[0]).with_name("alembic")
    ini = REPO / "src" / "lipdub" / "service" / "store" / "alembic.ini"
    up = subprocess.run([str(alembic), "-c", str(ini), "-x", f"url={url}", "upgrade", "head"],
                        capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    cur = subprocess.run([str(alembic), "-c", str(ini), "-x", f"url={url}", "current"],
                         capture_output=True, text=True)
    assert f"{head} (head)" in cur.stdout, cur


def test_a_newer_database_is_refused_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    env = {"LIPDUB_DATABASE_URL": url, "LIPDUB_DATA_DIR": str(tmp_path / "d")}
    ok = subprocess.run([*lipdub_cmd(), "db", "upgrade"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042'"))
    engine.dispose()
    for args in (["worker"], ["db", "upgrade"], ["serve", "--port", "9"]):
        out = subprocess.run([*lipdub_cmd(), *args], env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 2, (args, out)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "revision 0042, newer than this lipdub" in lines[0], lines

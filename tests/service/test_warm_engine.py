"""Warm engines (issue 23, item 2): each task's engine process is forked from a fork
server that loaded the engine once, and still lives and dies alone: a killed or crashed
engine, one past the memory cap and a cancelled one fail their task with the reason, and
the next task runs on a fresh child; the worker's death ends them all.

Real engine, real media, real processes; nothing stands in for the engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lipdub.service.worker.protocol import IdentifyJob, IdentifyOutput, Output
from lipdub.service.worker.runner import JobFailed, SubprocessEngine, rss_mb
from lipdub.service.worker.warm import WarmEngine

from .helpers import MEDIA

LONG_VIDEO = MEDIA / "infinitetalk__ref_video.mp4"  # 15 s: its identify runs for a while
# 1080p: identify holds ~130 MB more than the loaded engine (+15 MB for LONG_VIDEO's 458 px)
BIG_VIDEO = MEDIA / "facenetpytorch__video.mp4"


@pytest.fixture(scope="module")
def engine() -> Iterator[WarmEngine]:
    e = WarmEngine()
    e.server.ensure()
    yield e
    e.close()


def children(ppid: int) -> list[int]:
    """Processes whose parent is ``ppid`` (from /proc: the engine's children are the
    zygote's, not ours)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == ppid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Run:
    """One job on a thread of its own, as a worker slot runs it."""

    def __init__(self, engine: object, job: IdentifyJob) -> None:
        self.engine = engine
        self.job = job
        self.cancel = threading.Event()
        self.progress: list[tuple[float, float]] = []
        self.started = time.monotonic()
        self.output: Output | None = None
        self.error: JobFailed | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.output = self.engine.run(  # type: ignore[attr-defined]
                self.job,
                lambda f: self.progress.append((time.monotonic() - self.started, f)),
                self.cancel,
            )
        except JobFailed as e:
            self.error = e

    def wait_progress(self, timeout: float = 120.0) -> None:
        wait_until(lambda: bool(self.progress), timeout, "the engine's first progress")

    def finish(self, timeout: float = 300.0) -> Run:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not end"
        return self


def job_for(tmp: Path, video: Path, name: str) -> IdentifyJob:
    return IdentifyJob(
        video=str(video), out_dir=str(tmp / name / "session"), log=str(tmp / name / "engine.log")
    )


def the_child(engine: WarmEngine) -> int:
    zygote = engine.server.pid
    assert zygote is not None
    wait_until(lambda: len(children(zygote)) == 1, 10, "the job's child")
    return children(zygote)[0]


def test_each_task_runs_in_a_fresh_child_of_one_warm_fork_server(
    engine: WarmEngine, short_clip: Path, tmp_path: Path
) -> None:
    zygote = engine.server.pid
    assert zygote is not None
    # Fork is safe only from a process without threads (no BLAS or OpenCV pool in it).
    assert len(os.listdir(f"/proc/{zygote}/task")) == 1
    fds = sorted(os.listdir(f"/proc/{zygote}/fd"))
    seen = []
    for name in ("one", "two"):
        run = Run(engine, job_for(tmp_path, short_clip, name))
        run.wait_progress()
        child = the_child(engine)
        # ps names the task's job (its log is in the attempt's scratch, named by the task).
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        assert b"lipdub.service.worker.child" in cmdline and run.job.log.encode() in cmdline
        seen.append(child)
        run.finish()
        assert run.error is None, run.error
        assert isinstance(run.output, IdentifyOutput) and len(run.output.faces) == 1
        assert Path(run.output.faces[0].thumbnail).stat().st_size > 1000
        # The child is gone once its task ends: nothing carries over to the next task.
        assert children(zygote) == [] and not alive(child)
    assert seen[0] != seen[1]
    assert engine.server.pid == zygote and engine.server.alive()
    # Nothing of a task stays in the fork server either (its socket, pidfd, pipes; the
    # task's socket closes just after the exit status went out on it).
    # Generous: the fork server runs niced, and on a loaded machine (CI beside other
    # work) it reaps a second or more late; a descriptor that leaks never comes back.
    wait_until(lambda: sorted(os.listdir(f"/proc/{zygote}/fd")) == fds, 30,
               "the fork server to hold only its own descriptors again")


def test_a_warm_engine_starts_working_without_the_start_up(
    engine: WarmEngine, short_clip: Path, tmp_path: Path
) -> None:
    """The cold engine's first progress waits for its imports and models (1.7 s measured
    here on a busy machine); the warm one's comes as soon as the fork is done."""
    cold = Run(SubprocessEngine(), job_for(tmp_path, short_clip, "cold")).finish()
    warm = Run(engine, job_for(tmp_path, short_clip, "warm")).finish()
    assert cold.error is None and warm.error is None
    cold_first, warm_first = cold.progress[0][0], warm.progress[0][0]
    # Half, not a quarter: beside other work on 2 cores a fork was seen taking 0.4 s
    # against the cold start's 1.3 s; an engine that is not warm takes as long as cold.
    assert warm_first < cold_first / 2, (warm_first, cold_first)
    # Same engine, same answer.
    assert isinstance(cold.output, IdentifyOutput) and isinstance(warm.output, IdentifyOutput)
    assert [(f.start_time, f.end_time) for f in warm.output.faces] == [
        (f.start_time, f.end_time) for f in cold.output.faces
    ]


@pytest.mark.parametrize(
    ("sig", "said"),
    [(signal.SIGKILL, "killed by signal 9 (SIGKILL)"), (signal.SIGSEGV, "signal 11 (SIGSEGV)")],
)
def test_a_crashed_engine_fails_its_task_alone_and_the_next_runs(
    engine: WarmEngine, short_clip: Path, tmp_path: Path, sig: int, said: str
) -> None:
    zygote = engine.server.pid
    other = Run(engine, job_for(tmp_path, LONG_VIDEO, "bystander"))  # a second slot's task
    run = Run(engine, job_for(tmp_path, LONG_VIDEO, "crashing"))
    run.wait_progress()
    other.wait_progress()
    wait_until(lambda: len(children(zygote or 0)) == 2, 10, "both children")
    crashing = next(
        p for p in children(zygote or 0)
        if run.job.log.encode() in Path(f"/proc/{p}/cmdline").read_bytes()
    )
    os.kill(crashing, sig)
    run.finish()
    assert run.error is not None and run.error.code == "engine_crashed"
    assert said in run.error.message and "resubmit" in run.error.message
    # The other task and the fork server ran on.
    assert other.thread.is_alive() and engine.server.pid == zygote and engine.server.alive()
    other.cancel.set()
    other.finish()
    after = Run(engine, job_for(tmp_path, short_clip, "after")).finish()
    assert after.error is None and isinstance(after.output, IdentifyOutput)


def test_a_cancelled_engine_stops_and_the_next_runs(
    engine: WarmEngine, short_clip: Path, tmp_path: Path
) -> None:
    run = Run(engine, job_for(tmp_path, LONG_VIDEO, "cancelled"))
    run.wait_progress()
    child = the_child(engine)
    run.cancel.set()
    run.finish(10)
    assert run.error is not None and run.error.code == "cancelled"
    assert "cancelled" in run.error.message
    assert not alive(child)
    after = Run(engine, job_for(tmp_path, short_clip, "after")).finish()
    assert after.error is None and isinstance(after.output, IdentifyOutput)


def test_an_engine_past_the_memory_cap_fails_with_the_cap_and_the_next_runs(
    short_clip: Path, tmp_path: Path
) -> None:
    capped = WarmEngine()
    try:
        capped.server.ensure()
        assert capped.server.pid is not None
        # The cap sits a little above what the engine holds once loaded: identify's
        # 1080p frames in flight take it past that.
        loaded = rss_mb(capped.server.pid)
        capped.memory_mb = int(loaded + 40)
        run = Run(capped, job_for(tmp_path, BIG_VIDEO, "big")).finish()
        assert run.error is not None and run.error.code == "limit_exceeded"
        assert f"{capped.memory_mb} MB" in run.error.message
        assert capped.server.alive() and children(capped.server.pid) == []
        capped.memory_mb = 0
        after = Run(capped, job_for(tmp_path, short_clip, "after")).finish()
        assert after.error is None and isinstance(after.output, IdentifyOutput)
    finally:
        capped.close()


def test_a_dead_fork_server_fails_its_tasks_and_the_next_task_gets_a_new_one(
    short_clip: Path, tmp_path: Path
) -> None:
    own = WarmEngine()
    try:
        own.server.ensure()
        zygote = own.server.pid
        assert zygote is not None
        run = Run(own, job_for(tmp_path, LONG_VIDEO, "orphaned"))
        run.wait_progress()
        child = the_child(own)
        os.kill(zygote, signal.SIGKILL)
        run.finish(30)
        assert run.error is not None and run.error.code == "engine_crashed"
        assert "fork server stopped" in run.error.message
        wait_until(lambda: not alive(child), 15, "its child to die with it")
        after = Run(own, job_for(tmp_path, short_clip, "after")).finish()
        assert after.error is None and isinstance(after.output, IdentifyOutput)
        assert own.server.pid != zygote and own.server.starts == 2
    finally:
        own.close()


WORKER_SCRIPT = """
import sys, threading
from lipdub.service.worker.protocol import IdentifyJob
from lipdub.service.worker.warm import WarmEngine
engine = WarmEngine()
engine.server.ensure()
print(engine.server.pid, flush=True)
job = IdentifyJob(video=sys.argv[1], out_dir=sys.argv[2], log=sys.argv[3])
engine.run(job, lambda f: print("progress", flush=True), threading.Event())
"""


def test_the_worker_dying_ends_its_fork_server_and_engines(tmp_path: Path) -> None:
    """SIGKILL runs no cleanup in the worker: the zygote sees its control socket close,
    the engine its stdin; neither renders on for nobody."""
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, str(LONG_VIDEO), str(tmp_path / "session"),
         str(tmp_path / "engine.log")],
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        zygote = int(worker.stdout.readline())
        assert worker.stdout.readline().strip() == b"progress"
        wait_until(lambda: len(children(zygote)) == 1, 10, "the engine child")
        child = children(zygote)[0]
        worker.kill()
        worker.wait(10)
        wait_until(lambda: not alive(child) and not alive(zygote), 10, "both to exit")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_through_the_api_a_crashed_engine_fails_its_task_with_the_reason_and_refunds(
    tmp_path: Path, short_clip: Path
) -> None:
    """The same, as a client sees it: failCode, failMsg, the refund, the next task."""
    from .helpers import GEN, Server, upload_file, wait_task

    server = Server(tmp_path / "api").start()
    try:
        with server.client(server.new_key("crash", "0.01")) as api:
            long_url, short_url = upload_file(api, LONG_VIDEO), upload_file(api, short_clip)
            body = {"model": "kling-identify-face", "video_url": long_url}
            task_id = api.post(GEN, json=body).json()["data"]["taskId"]
            engine: list[int] = []

            def running() -> bool:
                engine[:] = [
                    int(c.parent.name) for c in Path("/proc").glob("[0-9]*/cmdline")
                    if _names(c, b"lipdub.service.worker.child", task_id.encode())
                ]
                return bool(engine)

            wait_until(running, 60, "the task's engine")
            os.kill(engine[0], signal.SIGSEGV)
            data = wait_task(api, task_id, 30)
            assert data["state"] == "failed" and data["failCode"] == "engine_crashed"
            assert "signal 11 (SIGSEGV)" in data["failMsg"], data["failMsg"]
            usage = api.get("/api/v1/usage").json()["data"]
            assert usage["balance_micros"] == 10_000 and usage["reserved_micros"] == 0
            body["video_url"] = short_url
            next_id = api.post(GEN, json=body).json()["data"]["taskId"]
            assert wait_task(api, next_id, 120)["state"] == "completed"
    finally:
        server.kill()


def _names(cmdline: Path, *parts: bytes) -> bool:
    try:
        text = cmdline.read_bytes()
    except OSError:
        return False
    return all(p in text for p in parts)

"""The warm fork server: ``python -m lipdub.service.worker.zygote FD``.

A cold engine process spends 0.6-0.7 s (several seconds on a busy machine) importing
numpy, SciPy, PyAV, OpenCV, dlib and lipdub and loading dlib's models before it reads
its first frame. This process pays that once: it imports and loads everything, then
forks one child per job. The child starts with all of it in memory (shared copy-on-write
with the zygote) and exits when its job ends, so each task still has a process of its
own (a crash or a memory blow-up ends that task only) and memory cannot creep from one
task to the next.

Fork is only safe from a single-threaded process: the zygote never starts a thread
(BLAS pools are pinned to one thread by the environment its parent gives it, OpenCV's
pool is created lazily and never used here) and checks that it has none before it
serves. The worker, which has threads, only talks to it.

The wire, on one AF_UNIX SOCK_SEQPACKET socket pair (each message whole, with its file
descriptors): the zygote says ``{"ready": pid}`` once loaded; the worker sends a job's
JSON with four descriptors: a socket of the task's own, the child's stdin (closed by
the worker when it dies) and stdout (progress and result lines, as ``child`` writes them)
and the engine log for stderr. On the task's socket the zygote answers ``{"pid": n}``,
then ``{"exit": code}`` (as ``Popen.returncode``: negative for a signal) when it has
reaped the child; the worker sends ``kill`` there to stop the child (the zygote, its
parent, is the one that knows whether the pid is still the child's). The control
socket's end (the worker died or stopped) kills every child and ends the zygote; the
zygote's end kills its children (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import selectors
import signal
import socket
import sys
from dataclasses import dataclass

from setproctitle import setproctitle

from lipdub.service.worker import child
from lipdub.service.worker.protocol import decode_job

MAX_JOB_BYTES = 1 << 20
N_FDS = 4  # task socket, stdin, stdout, log
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class _Running:
    pid: int
    pidfd: int
    task: socket.socket | None  # None once the worker's end is gone


def preload() -> None:
    """Everything a job would load before its first frame, loaded once in the zygote."""
    import lipdub
    import lipdub.faces.identify  # noqa: F401  (the verbs import these lazily)
    import lipdub.faces.tracker  # noqa: F401
    import lipdub.render.sync  # noqa: F401
    from lipdub.faces import models
    from lipdub.speech import visemes

    del lipdub
    models.preload()
    visemes.load_model()
    # One detector and one cascade parked in their pools: a job's first search takes
    # them instead of building its own (dlib's detector from text costs 0.3 s).
    with models.hog_detector(), models.haar_cascade():
        pass


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def _set_parent_death_signal() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not glibc/Linux: the stdin watcher still works
        pass


def _become_engine(
    zygote_pid: int, fds: list[int], job_text: str, inherited: list[int]
) -> None:
    """In the forked child: take the job's descriptors as 0, 1, 2 and run it. Never
    returns (``child.serve`` ends the process)."""
    task_fd, stdin_fd, stdout_fd, log_fd = fds
    for fd in inherited:  # the zygote's sockets and pidfds are not the child's business
        with contextlib.suppress(OSError):
            os.close(fd)
    os.close(task_fd)
    os.dup2(stdin_fd, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(log_fd, 2)
    for fd in (stdin_fd, stdout_fd, log_fd):
        os.close(fd)
    _set_parent_death_signal()
    if os.getppid() != zygote_pid:  # the zygote died before the line above
        os._exit(3)
    job = decode_job(job_text)
    # The command line is the zygote's: say which job this process runs (its log sits
    # in the attempt's scratch directory, named by the task), as the cold child's did.
    setproctitle(f"lipdub.service.worker.child {job.kind} {job.log}")
    child.serve(job)


class Zygote:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.sel = selectors.DefaultSelector()
        self.running: dict[int, _Running] = {}

    def serve(self) -> None:
        self.sel.register(self.ctl, selectors.EVENT_READ, ("ctl", 0))
        while True:
            for key, _ in self.sel.select():
                kind, pid = key.data
                if kind == "ctl":
                    if not self._fork_job():
                        self._kill_all()
                        return
                elif pid not in self.running:
                    continue  # reaped earlier in this batch (its kill crossed its exit)
                elif kind == "exit":
                    self._reap(pid)
                else:
                    self._task_message(pid)

    def _fork_job(self) -> bool:
        """Fork a child for the job on the control socket; False when the worker is gone."""
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.ctl, MAX_JOB_BYTES, N_FDS)
        except OSError:
            return False
        if not msg:
            for fd in fds:
                os.close(fd)
            return False
        if len(fds) != N_FDS:  # not our worker's message: ignore it, keep serving
            for fd in fds:
                os.close(fd)
            return True
        inherited = [self.ctl.fileno(), self.sel.fileno()]
        for r in self.running.values():
            inherited.append(r.pidfd)
            if r.task is not None:
                inherited.append(r.task.fileno())
        try:
            pid = os.fork()
        except OSError as e:  # out of processes or memory: this job fails, we serve on
            print(f"lipdub fork server: cannot fork: {e}", file=sys.stderr, flush=True)
            for fd in fds:
                os.close(fd)  # the worker sees its task's socket close: no child
            return True
        if pid == 0:
            try:
                _become_engine(os.getppid(), fds, msg.decode(), inherited)
            finally:
                os._exit(4)  # only if becoming the engine itself failed
        task = socket.socket(fileno=fds[0])
        for fd in fds[1:]:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.running[pid] = _Running(pid, pidfd, task)
        self.sel.register(pidfd, selectors.EVENT_READ, ("exit", pid))
        self.sel.register(task, selectors.EVENT_READ, ("task", pid))
        self._tell(task, {"pid": pid})
        return True

    def _reap(self, pid: int) -> None:
        r = self.running.pop(pid)
        _, status = os.waitpid(pid, 0)
        self.sel.unregister(r.pidfd)
        os.close(r.pidfd)
        if r.task is not None:
            self._tell(r.task, {"exit": os.waitstatus_to_exitcode(status)})
            self.sel.unregister(r.task)
            r.task.close()

    def _task_message(self, pid: int) -> None:
        """``kill`` from the worker, or its end closed (it gave up on the task): either
        way the child is stopped; it is reaped when its pidfd says so."""
        r = self.running[pid]
        assert r.task is not None
        try:
            data = r.task.recv(64)
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(r.task)
            r.task.close()
            r.task = None
        os.kill(pid, signal.SIGKILL)  # not reaped yet (still in running): still ours

    def _kill_all(self) -> None:
        for pid in list(self.running):
            os.kill(pid, signal.SIGKILL)
        for pid in list(self.running):
            os.waitpid(pid, 0)

    @staticmethod
    def _tell(task: socket.socket, msg: dict[str, int]) -> None:
        with contextlib.suppress(OSError):  # the worker gave up on this task already
            task.send(json.dumps(msg).encode())


def main(argv: list[str]) -> None:
    ctl = socket.socket(fileno=int(argv[1]))
    # The worker stops us by closing the control socket; a Ctrl-C meant for `lipdub
    # serve` must not kill the zygote (and its jobs) under a worker that is shutting down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Below the API's priority: on a small machine queries must not wait for renders.
    os.nice(5)
    try:
        preload()
    except Exception as e:  # told to the worker, which fails its task with it
        ctl.send(json.dumps({"error": f"loading the engine failed: {e}"}).encode())
        raise
    # Everything loaded so far lives as long as the zygote: out of the collector's sight,
    # a child's collections do not walk (and so copy, page by page) the shared objects.
    gc.collect()
    gc.freeze()
    threads = thread_count()
    if threads != 1:
        # A fork now would copy locks held by threads that do not exist in the child.
        ctl.send(json.dumps({"error": f"the fork server has {threads} threads"}).encode())
        sys.exit(1)
    ctl.send(json.dumps({"ready": os.getpid()}).encode())
    Zygote(ctl).serve()


if __name__ == "__main__":
    main(sys.argv)

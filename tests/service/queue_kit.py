"""Building blocks for queue-mechanics tests: a context on any database, a task in the
queue, and test engines that stand in for a render where only the queue matters (the
real engine runs in test_e2e, test_fleet and test_attempts)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lipdub.config import Settings
from lipdub.service.context import Context
from lipdub.service.models import IDENTIFY
from lipdub.service.store import Store, Submission, UnknownAccount, new_task_id
from lipdub.service.store import tables as t
from lipdub.service.worker import JobFailed
from lipdub.service.worker.protocol import (
    FoundFace,
    IdentifyJob,
    IdentifyOutput,
    Job,
    Output,
    SyncOutput,
)


def make_ctx(data_dir: Path, db_url: str, **overrides: Any) -> Context:
    settings = Settings(
        data_dir=data_dir,
        public_url="http://127.0.0.1:9",
        allow_private_urls="127.0.0.1/32",
        **overrides,
    )
    return Context.build(settings, Store.open(db_url))


def queue_task(
    ctx: Context, model: str = IDENTIFY, account: str = "acme", price: int = 700,
    callback_url: str | None = None,
) -> str:
    """A task as the API would queue it: its input stored, its price reserved."""
    try:
        ctx.store.account_summary(account)
    except UnknownAccount:
        ctx.store.create_key(account, 1_000_000)
    tid = new_task_id()
    ctx.storage.put_bytes(f"tasks/{tid}/video_url", b"a video")
    job: dict[str, Any] = {"video_key": f"tasks/{tid}/video_url"}
    if model != IDENTIFY:
        ctx.storage.put_bytes(f"tasks/{tid}/audio", b"a sound")
        ctx.storage.put_bytes(f"tasks/{tid}/session/session.json", b"{}")
        job.update(
            session_id="s1", session_dir_key=f"tasks/{tid}/session", original_volume=1.0,
            faces=[{"face_id": "face_001", "audio_key": f"tasks/{tid}/audio", "start_ms": 0,
                    "end_ms": 1000, "insert_ms": 0, "volume": 1.0}],
        )
    ctx.store.submit(Submission(account, model, {}, job, price, callback_url, None, tid))
    return tid


def ledger_kinds(ctx: Context, task_id: str) -> list[str]:
    with ctx.store.engines.read.connect() as conn:
        rows = conn.execute(
            select(t.ledger.c.kind).where(t.ledger.c.task_id == task_id).order_by(t.ledger.c.id)
        )
        return [r[0] for r in rows]


class QuickEngine:
    """Writes plausible outputs at once; ``before_return`` runs when the 'render' is done
    (the moment a test injects its fault)."""

    def __init__(self, before_return: Callable[[], Any] | None = None) -> None:
        self.before_return = before_return

    def run(self, job: Job, progress: Callable[[float], None], cancel: threading.Event) -> Output:
        progress(0.5)
        out: Output
        if isinstance(job, IdentifyJob):
            d = Path(job.out_dir)
            d.mkdir(parents=True, exist_ok=True)
            (d / "session.json").write_text("{}")
            (d / "face_001.jpg").write_bytes(b"jpeg")
            out = IdentifyOutput(
                session_id="s" + uuid.uuid4().hex[:12],
                session_dir=str(d),
                video={"duration_ms": 2000},
                faces=[
                    FoundFace(face_id="face_001", start_time=0, end_time=2000,
                              segments=[[0, 2000]], thumbnail=str(d / "face_001.jpg"))
                ],
            )
        else:
            Path(job.out_path).write_bytes(b"mp4")
            out = SyncOutput(path=job.out_path, duration_ms=2000, frame_count=50)
        if self.before_return is not None:
            self.before_return()
        return out


class HangingEngine:
    """Reports progress once, then hangs until stopped (an engine stuck in native code)."""

    def run(self, job: Job, progress: Callable[[float], None], cancel: threading.Event) -> Output:
        progress(0.1)
        cancel.wait(60)
        raise JobFailed("cancelled", "The task was cancelled while running.")


class EndlessEngine:
    """Makes progress for ever (a render that never converges)."""

    def run(self, job: Job, progress: Callable[[float], None], cancel: threading.Event) -> Output:
        step = 0
        while not cancel.wait(0.1):
            step += 1
            progress(min(0.99, step / 1000))
        raise JobFailed("cancelled", "The task was cancelled while running.")

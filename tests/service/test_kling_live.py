"""A smoke test against the real Kling, run only when the operator's credentials are in
the environment (LIPDUB_KLING_ACCESS_KEY + LIPDUB_KLING_SECRET_KEY, or
LIPDUB_KLING_API_KEY; LIPDUB_KLING_BASE_URL for another region). It lists tasks, which
costs nothing; with LIPDUB_KLING_SMOKE_VIDEO_URL (a public mp4 Kling accepts) it also
identifies that video, which Kling charges for."""

from __future__ import annotations

import os

import pytest

from lipdub.config import Settings
from lipdub.service.upstream import KlingClient

CREDENTIALS = bool(
    os.environ.get("LIPDUB_KLING_API_KEY")
    or (os.environ.get("LIPDUB_KLING_ACCESS_KEY") and os.environ.get("LIPDUB_KLING_SECRET_KEY"))
)

pytestmark = pytest.mark.skipif(
    not CREDENTIALS, reason="no Kling credentials in the environment (LIPDUB_KLING_*)"
)


def test_the_real_kling_accepts_our_token_and_answers_in_its_shapes() -> None:
    client = KlingClient.from_settings(Settings.from_env())
    assert client.problem() is None
    tasks = client.list_tasks(1, 5)
    for task in tasks:
        assert isinstance(task["task_id"], str)
        assert task["task_status"] in ("submitted", "processing", "succeed", "failed")
    video = os.environ.get("LIPDUB_KLING_SMOKE_VIDEO_URL")
    if video:
        data = client.identify(video)
        assert isinstance(data["session_id"], str)
        for face in data["face_data"]:
            assert isinstance(face["face_id"], str) and face["end_time"] > face["start_time"]

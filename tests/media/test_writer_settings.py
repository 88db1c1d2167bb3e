"""The x264 settings a written file actually carries (x264 writes them into the stream)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lipdub.media.video import VideoWriter, usable_cores


def _written_settings(path: Path, width: int, height: int) -> dict[str, int]:
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    with VideoWriter(path, width, height, 25) as w:
        for _ in range(3):
            w.write(rgb)
    data = path.read_bytes()
    found = {k: re.search(rb" " + k.encode() + rb"=(\d+)", data) for k in
             ("rc_lookahead", "threads")}
    assert all(found.values()), "x264's settings are not in the stream"
    return {k: int(m.group(1)) for k, m in found.items() if m is not None}


@pytest.mark.parametrize(("size", "large"), [((1280, 720), False), ((1920, 1080), False),
                                             ((2048, 1152), True)])
def test_pictures_above_1080p_get_the_shorter_lookahead_and_every_core(
        tmp_path: Path, size: tuple[int, int], large: bool) -> None:
    # Above 1080p each look-ahead frame holds ~24 MiB at 4K (the memory budget's margin),
    # and x264 needs more than the core the rest of the pipeline leaves it.
    got = _written_settings(tmp_path / "out.mp4", *size)
    cores = usable_cores()
    assert got["rc_lookahead"] == (8 if large else 10)
    assert got["threads"] == (cores if large else max(1, cores - 1))

"""The x264 settings a written file actually carries (x264 writes them into the stream)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lipdub.media.video import VideoWriter


def _written_lookahead(path: Path, width: int, height: int) -> int:
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    with VideoWriter(path, width, height, 25) as w:
        for _ in range(3):
            w.write(rgb)
    found = re.search(rb"rc_lookahead=(\d+)", path.read_bytes())
    assert found is not None, "x264's settings are not in the stream"
    return int(found.group(1))


@pytest.mark.parametrize(("size", "lookahead"), [((1280, 720), 10), ((1920, 1080), 10),
                                                  ((2048, 1152), 8)])
def test_pictures_above_1080p_get_the_shorter_lookahead(tmp_path: Path,
                                                        size: tuple[int, int],
                                                        lookahead: int) -> None:
    # Above 1080p each look-ahead frame is a 12 MB picture (at 4K) x264 holds.
    assert _written_lookahead(tmp_path / "out.mp4", *size) == lookahead

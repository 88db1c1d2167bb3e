"""Length modes in the CLI and Python: the same rule as the API (lipdub.media.fit), and
every cut, loop or stretch reported in SyncResult and on the terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lipdub
from lipdub.media import fit
from tests.conftest import media
from tests.mediagen import crop_video

SPEECH = "videoretalking__audio_1.wav"  # 5.0 s


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("modes") / "face_3s.mp4"
    return crop_video(media("videoretalking__face_2.mp4"), out, 3.0)


def test_the_rule_table() -> None:
    plan = fit.plan
    with pytest.raises(lipdub.InputError, match="sync_mode cut_off"):
        plan(5000, 0, 3000, None, where="f")
    with pytest.raises(lipdub.InputError, match="past the video's end"):
        plan(5000, 0, 3000, "silence", where="f")
    assert plan(3040, 0, 3000, None, where="f").trimmed_ms == 40  # within the tolerance
    cut = plan(5000, 1000, 3000, "cut_off", where="f")
    assert (cut.placed_ms, cut.trimmed_ms) == (2000, 3000)
    assert plan(1000, 0, 3000, "cut_off", where="f").placed_ms == 1000  # video kept whole
    assert plan(1000, 0, 3000, "loop", where="f").repeats == 3
    assert plan(1000, 0, 3000, "silence", where="f").placed_ms == 1000
    assert plan(5000, 0, 3000, "remap", where="f").stretch == pytest.approx(0.6)
    with pytest.raises(lipdub.InputError, match="beyond x0.5-x2"):
        plan(1000, 0, 3000, "remap", where="f")
    sr = 1000
    x = np.arange(1000, dtype=np.float32)
    bounced = fit.apply(x, sr, plan(1000, 0, 2500, "bounce", where="f"))
    assert len(bounced) == 2500 and bounced[1000] == 999 and bounced[2000] == 0
    looped = fit.apply(x, sr, plan(1000, 0, 2500, "loop", where="f"))
    assert looped[1500] == 500


def test_cli_refuses_like_the_api_and_reports_a_cut(clip: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "lipdub.cli", "sync", str(clip), str(media(SPEECH))]
    refused = subprocess.run([*cmd, "-o", str(tmp_path / "x.mp4")], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and "sync_mode cut_off" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    ok = subprocess.run([*cmd, "--sync-mode", "cut_off", "-o", str(tmp_path / "o.mp4")],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "note: face_001: 2016 ms of audio past the video's end were cut" in ok.stdout
    bad = subprocess.run([*cmd, "--sync-mode", "stretchy"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--sync-mode takes one of" in bad.stderr


def test_python_sync_result_reports_the_fit(clip: Path, tmp_path: Path) -> None:
    session = lipdub.identify(clip)
    assert repr(session).startswith(f"Session({session.session_id}: 844x844, 25 fps, 3000 ms")
    assert "face_001" in str(session) and "array" not in str(session)
    result = lipdub.sync(
        clip,
        [lipdub.FaceAudio("face_001", media(SPEECH), end_ms=1200, sync_mode="loop")],
        out_path=tmp_path / "loop.mp4", session=session,
    )
    (f,) = result.fits
    assert f["mode"] == "loop" and f["repeats"] == pytest.approx(2.5, abs=0.01)
    assert result.trimmed_ms == 0 and "plays 2.50 times" in result.notes[0]
    assert json.loads(json.dumps(result.to_json()))["fits"][0]["placed_ms"] == 3000

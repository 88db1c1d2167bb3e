"""What `lipdub serve` and `lipdub worker` say when they start: where the API listens, a
development key on the very first start (``serve --dev-key``, used by ``make run``), a
three-step curl that works as pasted, and loud warnings when a split deployment keeps a
setting at its single-machine default."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from lipdub.config import Settings
from lipdub.service.store import Store

DEV_ACCOUNT = "dev"
DEV_CREDITS_MICROS = 5_000_000
# Real media beside the repository (the project's test media); the user's own files work too.
SAMPLE_DIR = Path(__file__).resolve().parents[4].parent / "shared" / "media"
SAMPLE_VIDEO = "videoretalking__face_2.mp4"
SAMPLE_AUDIO = "videoretalking__audio_1.wav"


def dev_key_if_first_start(store: Store) -> str | None:
    """A key for account 'dev' with $5 when the store has no key at all, else None."""
    if store.list_keys():
        return None
    return store.create_key(DEV_ACCOUNT, DEV_CREDITS_MICROS)


def samples() -> tuple[str, str]:
    video, audio = SAMPLE_DIR / SAMPLE_VIDEO, SAMPLE_DIR / SAMPLE_AUDIO
    if video.is_file() and audio.is_file():
        return str(video), str(audio)
    return "clip.mp4", "speech.wav"


def quickstart(url: str, key: str) -> str:
    """Upload -> identify -> lip-sync as shell lines that run as pasted (bash or sh, curl,
    and the python3 that make needs anyway to read the JSON)."""
    video, audio = samples()
    auth = '-H "Authorization: Bearer $KEY"'
    js = "-H 'Content-Type: application/json'"
    gen = "$URL/api/v1/audio/generations"
    field = (
        "python3 -c 'import json,sys; d=json.load(sys.stdin)[\"data\"]; "
        "print(eval(sys.argv[1]))'"
    )
    lines = [
        f"KEY={key} URL={url}",
        f"VIDEO={shlex.quote(video)} AUDIO={shlex.quote(audio)}  # or your own files",
        f"get() {{ {field} \"$1\"; }}",
        "# 1. upload the video and the speech (local files go through /api/v1/files)",
        f'V=$(curl -s {auth} -F "file=@$VIDEO" $URL/api/v1/files | get \'d["url"]\')',
        f'A=$(curl -s {auth} -F "file=@$AUDIO" $URL/api/v1/files | get \'d["url"]\')',
        "# 2. identify the faces (wait=30 holds the answer until the task is done)",
        f"T=$(curl -s {auth} {js} -d '{{\"model\":\"kling-identify-face\","
        f"\"video_url\":\"'\"$V\"'\"}}' {gen} | get 'd[\"taskId\"]')",
        f'until S=$(curl -s {auth} "{gen}?task_id=$T&wait=30" | get '
        "'(d.get(\"faceData\") or {}).get(\"session_id\") or d.get(\"failMsg\") or \"\"')"
        ' && [ -n "$S" ]; do sleep 1; done',
        "# 3. lip-sync face_001 to 3 s of the speech, wait for it, download dubbed.mp4",
        f"T=$(curl -s {auth} {js} -d '{{\"model\":\"kling-advanced-lip-sync\",\"session_id\":"
        "\"'\"$S\"'\",\"face_choose\":[{\"face_id\":\"face_001\",\"sound_file\":\"'\"$A\"'\","
        f"\"sound_end_time\":3000}}]}}' {gen} | get 'd[\"taskId\"]')",
        f'until R=$(curl -s {auth} "{gen}?task_id=$T&wait=30" | get '
        "'(d.get(\"resultUrls\") or [d.get(\"failMsg\") or \"\"])[0]')"
        ' && [ -n "$R" ]; do sleep 1; done',
        'case "$R" in http*) curl -s -o dubbed.mp4 "$R" && echo "wrote dubbed.mp4";; '
        '*) echo "failed: $R";; esac',
    ]
    return "\n".join(lines)


PRIVATE_HINT = (
    "Local callbacks: callback_url and media URLs on this machine or a private network "
    "(127.0.0.1, 10.x, 192.168.x) are refused unless allowed; to try a receiver on this "
    "machine, start with LIPDUB_ALLOW_PRIVATE_URLS=127.0.0.1/32 (e.g. "
    "'LIPDUB_ALLOW_PRIVATE_URLS=127.0.0.1/32 make run')."
)


def banner(url: str, key: str | None, data_dir: Path, private_allowed: bool = False) -> str:
    """What `serve --dev-key` prints before it starts listening."""
    out = [
        f"lipdub listening on {url}  (API docs: {url}/docs, data in {data_dir})",
        f"Web console: open {url}/ in a browser and sign in with an API key.",
    ]
    if not private_allowed:
        out.append(PRIVATE_HINT)
    if key is None:
        out.append(
            "Keys: '.venv/bin/lipdub keys list'; a new one: "
            "'.venv/bin/lipdub keys create NAME --credits 5'."
        )
        return "\n".join(out)
    out += [
        f"First start: created a development key for account '{DEV_ACCOUNT}' with $5 of "
        "credits (paste it into the web console, or use it below). It is shown only now:",
        "",
        f"    {key}",
        "",
        "More keys: '.venv/bin/lipdub keys create NAME --credits 5'. "
        "Try it (paste into a shell):",
        "",
        quickstart(url, key),
        "",
    ]
    return "\n".join(out)


def split_warnings(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """Settings that every process of a split deployment (serve --workers 0 + lipdub
    worker) must share, left at single-machine defaults."""
    env = os.environ if env is None else env
    warn = []
    if not env.get("LIPDUB_PUBLIC_URL"):
        warn.append(
            f"LIPDUB_PUBLIC_URL is not set: callbacks and result links will point to "
            f"{settings.public_url}; set it to the URL clients reach the API at."
        )
    if not settings.database_url:
        warn.append(
            "LIPDUB_DATABASE_URL is not set: this process uses its own SQLite file; set the "
            "PostgreSQL URL that the API and every worker share."
        )
    if not settings.signing_key:
        warn.append(
            "LIPDUB_SIGNING_KEY is not set: the media-link key is read from this data "
            "directory; set the same key on the API and every worker."
        )
    if not env.get("LIPDUB_DATA_DIR"):
        warn.append(
            f"LIPDUB_DATA_DIR is not set: media go to {settings.data_dir.resolve()}; point "
            "every process at the same shared storage."
        )
    return warn

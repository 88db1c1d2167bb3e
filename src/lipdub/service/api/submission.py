"""Turning a create request into an accepted task: fetch inputs, validate, price.

Everything a client can get wrong is checked here, before money moves, and reported as a
400 with one sentence saying what to fix. Runs in a thread (it downloads and probes).
"""

from __future__ import annotations

import json
import math
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from lipdub.errors import LipdubError
from lipdub.media import fit as length
from lipdub.media.fetch import fetch_to_file, resolve_checked
from lipdub.service.api.schemas import IdentifyRequest, SyncRequest
from lipdub.service.context import Context
from lipdub.service.models import IDENTIFY, SYNC
from lipdub.service.store import Submission, new_task_id
from lipdub.service.store.db import now_ms

KLING = "kling"
# Kling's documented limits (identify-face, advanced-lip-sync), checked before a task
# on the Kling engine is accepted.
KLING_MIN_SIDE_PX, KLING_MAX_SIDE_PX = 512, 2160
KLING_MIN_VIDEO_MS, KLING_MAX_VIDEO_MS = 2_000, 60_000
KLING_MIN_OVERLAP_MS = 2_000
MB = 1024 * 1024
KLING_MAX_VIDEO_BYTES = 100 * MB


class RequestError(Exception):
    """A client mistake; the message is returned verbatim with HTTP 400."""


def check_callback_url(ctx: Context, url: str | None) -> None:
    if url is None:
        return
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestError("callback_url must be an absolute http(s) URL: fix it or leave it out.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RequestError("callback_url has an invalid port: fix the URL.") from None
    try:
        resolve_checked(parts.hostname, port, ctx.policy, "callback_url")
    except LipdubError as e:
        raise RequestError(str(e)) from None


def looks_local(source: str) -> bool:
    """file:// URLs and paths: what a user with a file on their own disk tries first.
    Base64 has no '.', '\\' or '~', and starts with '/' only by chance, so a short string
    with those (or a leading '/' that does not decode as Base64) is a path."""
    s = source.strip()
    if s[:7].lower() == "file://":
        return True
    if len(s) > 4096 or "://" in s[:12] or s[:5].lower() == "data:":
        return False
    return s.startswith(("/", "./", "../", "~")) or "." in s or "\\" in s


def _acquire(ctx: Context, source: str, dest: Path, field: str, max_bytes: int) -> None:
    """Put the media named by ``source`` at ``dest`` (a local file, checked there and
    then stored): our own upload URL, or a fetch."""
    if looks_local(source):
        raise RequestError(
            f"{field} looks like a file on your machine ({source.strip()[:80]!r}), which the "
            "server cannot read: upload it with POST /api/v1/files (multipart, part 'file') "
            "and send the url it returns."
        )
    own = ctx.storage.key_from_own_url(source.strip(), now_ms())
    if own is not None:
        if (ctx.storage.size(own) or 0) > max_bytes:
            raise RequestError(
                f"{field} is larger than {max_bytes // (1024 * 1024)} MB: send a smaller file."
            )
        ctx.storage.get_file(own, dest)
        return
    s = ctx.settings
    try:
        fetch_to_file(
            source,
            dest,
            ctx.policy,
            field=field,
            max_bytes=max_bytes,
            timeout_s=s.fetch_timeout_s,
            connect_timeout_s=s.fetch_connect_timeout_s,
            max_redirects=s.max_redirects,
            min_bytes_per_s=s.fetch_min_bytes_per_s,
            rate_window_s=s.fetch_rate_window_s,
        )
    except LipdubError as e:
        raise RequestError(str(e)) from None


def prepare(ctx: Context, account: str, req: IdentifyRequest | SyncRequest) -> Submission:
    """Fetch, check and price a create request (runs in a thread: it downloads)."""
    if isinstance(req, IdentifyRequest):
        return prepare_identify(ctx, account, req)
    return prepare_sync(ctx, account, req)


def prepare_identify(ctx: Context, account: str, req: IdentifyRequest) -> Submission:
    s = ctx.settings
    if req.video_id is not None and req.video_url is not None:
        raise RequestError("Give either video_url or video_id, not both: drop video_id.")
    if req.video_id is not None:
        raise RequestError(
            "video_id names a Kling-generated video, which lipdub does not have: send video_url."
        )
    if not req.video_url:
        raise RequestError("video_url is required for kling-identify-face: add it to the request.")
    check_callback_url(ctx, req.callback_url)
    engine = ctx.store.account_engine(account) or s.default_engine
    task_id = new_task_id()
    key = f"tasks/{task_id}/video_url"
    try:
        with tempfile.TemporaryDirectory(dir=ctx.scratch) as tmp:
            local = Path(tmp) / "video_url"
            info = _acquire_video(ctx, req.video_url, local, key)
            if engine == KLING:
                check_kling_video(info, local.stat().st_size)
    except BaseException:
        ctx.storage.delete_prefix(f"tasks/{task_id}")
        raise
    param = req.model_dump(exclude_none=True)
    param["video_url"] = _short(req.video_url)
    job: dict[str, Any] = {"video_key": key, "duration_ms": info.duration_ms}
    if engine == KLING and _passable(ctx, req.video_url):
        # Kling fetches the video itself: the client's own URL goes through unchanged
        # (lipdub's copy is only for checking it and for the session).
        job["source_url"] = req.video_url.strip()
    return Submission(
        account=account,
        model=IDENTIFY,
        param=param,
        job=job,
        price_micros=s.price_identify_micros,
        callback_url=req.callback_url,
        external_task_id=req.external_task_id,
        task_id=task_id,
        engine=engine,
    )


def _passable(ctx: Context, source: str) -> bool:
    """A client's http(s) URL (not Base64, not lipdub's own upload link)."""
    src = source.strip()
    return src[:8].lower().startswith(("http://", "https://")) and (
        ctx.storage.key_from_own_url(src, now_ms()) is None
    )


def check_kling_video(info: Any, size: int) -> None:
    """Kling's own limits on a video, stricter than lipdub's: refused here, free, rather
    than upstream after the price was reserved."""
    if size > KLING_MAX_VIDEO_BYTES:
        raise RequestError(
            f"video_url is {size / MB:.0f} MB: this account's engine (Kling) takes videos of "
            f"at most {KLING_MAX_VIDEO_BYTES // MB} MB, send a smaller file."
        )
    short, long = min(info.width, info.height), max(info.width, info.height)
    if short < KLING_MIN_SIDE_PX or long > KLING_MAX_SIDE_PX:
        raise RequestError(
            f"video_url is {info.width}x{info.height}: this account's engine (Kling) takes "
            f"sides between {KLING_MIN_SIDE_PX} and {KLING_MAX_SIDE_PX} px, resize it."
        )
    if not KLING_MIN_VIDEO_MS <= info.duration_ms <= KLING_MAX_VIDEO_MS:
        raise RequestError(
            f"video_url lasts {info.duration_ms} ms: this account's engine (Kling) takes "
            f"{KLING_MIN_VIDEO_MS // 1000}-{KLING_MAX_VIDEO_MS // 1000} s videos."
        )


def check_kling_faces(req: SyncRequest) -> None:
    """What Kling refuses in a lip-sync request that lipdub's own engine accepts."""
    if len(req.face_choose) != 1:
        raise RequestError(
            f"face_choose has {len(req.face_choose)} entries, but this session was identified "
            "on the Kling engine, which lip-syncs one face per task: send one entry per "
            "task (each task's result_url is a whole video; see docs/kling-engine.md)."
        )
    fc = req.face_choose[0]
    if fc.sync_mode in ("loop", "bounce", "remap"):
        raise RequestError(
            f"face_choose[0].sync_mode {fc.sync_mode!r} is not available on the Kling engine, "
            "which plays the clip once: use cut_off or leave it out."
        )


def _acquire_video(ctx: Context, source: str, dest: Path, key: str) -> Any:
    """Fetch and check the video locally, then store it under ``key``; its probe info."""
    from lipdub.media.video import probe

    s = ctx.settings
    _acquire(ctx, source, dest, "video_url", s.max_video_bytes)
    try:
        info = probe(dest, max_duration_ms=s.max_video_ms)
    except LipdubError as e:
        raise RequestError(str(e)) from None
    if info.frame_count <= 1:
        raise RequestError(
            "video_url is a still image (one frame), not a video: send an mp4 or mov "
            f"of at least {s.min_video_ms / 1000:g} s."
        )
    if info.duration_ms < s.min_video_ms:
        raise RequestError(
            f"video_url lasts {info.duration_ms} ms: send a video of at least "
            f"{s.min_video_ms / 1000:g} s."
        )
    short, long = min(info.width, info.height), max(info.width, info.height)
    if short < s.min_side_px or long > s.max_side_px:
        raise RequestError(
            f"video_url is {info.width}x{info.height}: sides must be between "
            f"{s.min_side_px} and {s.max_side_px} px, resize it."
        )
    ctx.storage.put_file(key, dest)
    return info


def _short(source: str) -> str:
    """Inline Base64 would make param (and every callback) megabytes long: elide it."""
    if source[:8].lower().startswith(("http://", "https://")):
        return source
    return f"<inline data, {len(source)} characters>"


def _spans(face: dict[str, Any]) -> list[tuple[int, int]]:
    segs = face.get("segments") or [[face["start_time"], face["end_time"]]]
    return [(int(a), int(b)) for a, b in segs]


def _left_alone(face: dict[str, Any], start: int, end: int) -> list[dict[str, Any]] | None:
    """The face's not re-renderable spans (turned, mouth covered) when they cover every
    visible moment of ``[start, end)``; None when some of it can be re-rendered."""
    off = [(int(n["start_time"]), int(n["end_time"])) for n in face.get("not_renderable", [])]
    for a, b in _spans(face):
        t, stop = max(a, start), min(b, end)
        while t < stop:  # walk the visible part past each span that covers it
            cover = next((e for s, e in off if s <= t < e), None)
            if cover is None:
                return None
            t = cover
    return [n for n in face.get("not_renderable", [])
            if n["start_time"] < end and start < n["end_time"]]


def prepare_sync(ctx: Context, account: str, req: SyncRequest) -> Submission:
    from lipdub.media.audio import decode_audio

    s = ctx.settings
    check_callback_url(ctx, req.callback_url)
    sess = ctx.store.get_session(req.session_id, account)
    if sess is None:
        raise RequestError(
            f"Unknown session_id {req.session_id!r}: run kling-identify-face first and use "
            "the session_id it returns."
        )
    if sess["expires_ms"] < now_ms():
        raise RequestError(
            f"session_id {req.session_id!r} expired {s.session_ttl_s // 3600} h after "
            "identification: identify the video again."
        )
    if len(req.face_choose) > s.max_faces_per_task:
        raise RequestError(
            f"face_choose has {len(req.face_choose)} entries: at most "
            f"{s.max_faces_per_task} faces per task."
        )
    faces = {f["face_id"]: f for f in json.loads(sess["faces_json"])}
    engine = sess["engine"] or "local"
    if engine == KLING:
        check_kling_faces(req)
    seen: set[str] = set()
    for i, fc in enumerate(req.face_choose):
        if fc.face_id not in faces:
            known = ", ".join(sorted(faces)) or "none"
            raise RequestError(
                f"face_choose[{i}].face_id {fc.face_id!r} is not in this session "
                f"(it has {known}): use a face_id from the identify result."
            )
        if fc.face_id in seen:
            raise RequestError(
                f"face_choose[{i}].face_id {fc.face_id!r} is listed twice: one entry per face."
            )
        seen.add(fc.face_id)
        if fc.audio_id is not None and fc.sound_file is not None:
            raise RequestError(
                f"face_choose[{i}] has both audio_id and sound_file: send only sound_file."
            )
        if fc.audio_id is not None:
            raise RequestError(
                f"face_choose[{i}].audio_id is not supported by lipdub: send sound_file instead."
            )
        if not fc.sound_file:
            raise RequestError(f"face_choose[{i}].sound_file is required: give a URL or Base64.")

    task_id = new_task_id()
    duration = int(sess["duration_ms"])
    price = 0
    job_faces = []
    tmp = tempfile.TemporaryDirectory(dir=ctx.scratch)
    try:
        for i, fc in enumerate(req.face_choose):
            field = f"face_choose[{i}].sound_file"
            key = f"tasks/{task_id}/{field}"
            dest = Path(tmp.name) / field  # the name the decoder's message shows
            assert fc.sound_file is not None
            _acquire(ctx, fc.sound_file, dest, field, s.max_audio_bytes)
            try:
                # 8 kHz mono is plenty to measure the length and proves the audio decodes.
                samples = decode_audio(dest, sr=8000, channels=1, max_duration_ms=s.max_audio_ms)
            except LipdubError as e:
                raise RequestError(str(e)) from None
            audio_ms = int(len(samples) * 1000 / 8000)
            start = fc.sound_start_time
            end = fc.sound_end_time if fc.sound_end_time is not None else audio_ms
            where = f"face_choose[{i}]"
            if end <= start:
                raise RequestError(
                    f"{where}.sound_end_time ({end} ms) is not after sound_start_time "
                    f"({start} ms): the clip runs from start to end, give end > start."
                )
            if end > audio_ms + 50:
                raise RequestError(
                    f"{where}.sound_end_time {end} ms is past the audio's end ({audio_ms} ms): "
                    "lower it or leave it out."
                )
            end = min(end, audio_ms)
            if end - start < s.min_clip_ms:
                raise RequestError(
                    f"{where} clip is {max(end - start, 0)} ms: sound_end_time - "
                    f"sound_start_time must be at least {s.min_clip_ms} ms."
                )
            clip = end - start
            ins = fc.sound_insert_time
            try:
                # The engine applies the same plan (lipdub.media.fit) to the same clip.
                fit = length.plan(clip, ins, duration, fc.sync_mode, where=where)
            except LipdubError as e:
                raise RequestError(str(e)) from None
            placed = int(fit.placed_ms)
            spans = _spans(faces[fc.face_id])
            if not any(a < ins + placed and b > ins for a, b in spans):
                vis = ", ".join(f"{a}-{b} ms" for a, b in spans)
                raise RequestError(
                    f"{where} places audio at {ins}-{ins + placed} ms but {fc.face_id} is "
                    f"visible only at {vis}: move sound_insert_time into that span."
                )
            alone = _left_alone(faces[fc.face_id], ins, ins + placed)
            if alone is not None:
                why = ", ".join(f"{n['start_time']}-{n['end_time']} ms {n['reason']}"
                                for n in alone)
                raise RequestError(
                    f"{where} places audio at {ins}-{ins + placed} ms, where "
                    f"{fc.face_id} cannot be re-rendered ({why}): move sound_insert_time "
                    "to where its mouth is visible."
                )
            overlap = sum(max(0, min(b, ins + placed) - max(a, ins)) for a, b in spans)
            if engine == KLING and overlap < KLING_MIN_OVERLAP_MS:
                raise RequestError(
                    f"{where} overlaps {fc.face_id}'s visible span by {overlap} ms; the Kling "
                    f"engine needs at least {KLING_MIN_OVERLAP_MS} ms of audio while the face "
                    "is visible: move sound_insert_time or give a longer clip."
                )
            ctx.storage.put_file(key, dest)
            # Billed by the audio that plays on the video (after cut, loop or stretch).
            price += math.ceil(placed / s.sync_block_ms) * s.price_sync_block_micros
            job_faces.append(
                {
                    "face_id": fc.face_id,
                    "audio_key": key,
                    "start_ms": start,
                    "end_ms": end,
                    "insert_ms": ins,
                    "volume": fc.sound_volume,
                    # A cut within the tolerance is a cut: the engine, measuring at another
                    # sample rate, must not refuse what was accepted here.
                    "sync_mode": fc.sync_mode or ("cut_off" if fit.trimmed_ms else None),
                }
            )
    except BaseException:
        ctx.storage.delete_prefix(f"tasks/{task_id}")
        raise
    finally:
        tmp.cleanup()
    param = req.model_dump(exclude_none=True)
    for p in param["face_choose"]:
        p["sound_file"] = _short(p["sound_file"])
    return Submission(
        account=account,
        model=SYNC,
        param=param,
        job={
            "session_id": req.session_id,
            "video_key": sess["video_key"],
            "session_dir_key": sess["dir_key"],
            "faces": job_faces,
            "original_volume": req.face_choose[0].original_audio_volume,
        },
        price_micros=price,
        callback_url=req.callback_url,
        external_task_id=req.external_task_id,
        task_id=task_id,
        engine=engine,
    )

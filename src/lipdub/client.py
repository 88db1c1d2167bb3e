"""HTTP clients of a lipdub service: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both speak the public API only (the contract plus lipdub's additive endpoints) and share
every rule here: request bodies, the envelope, errors, back-off. Local files given as
``video`` or ``sound_file`` are uploaded first through ``POST /api/v1/files`` (a path
that does not exist is a ``FileNotFoundError`` before any request); ``wait`` raises
``TaskFailed`` (with the task's ``failCode`` and ``failMsg``) for a failed task::

    from lipdub import Client
    with Client("http://127.0.0.1:8000", key) as c:
        faces = c.wait(c.identify("clip.mp4")["taskId"])["faceData"]
        task = c.lip_sync(faces["session_id"], [{"face_id": "face_001",
                                                  "sound_file": "speech.wav"}])
        c.download(c.wait(task["taskId"]), "dubbed.mp4")

``verify_webhook`` checks a Standard Webhooks signature (accounts with a webhook secret).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

GEN = "/api/v1/audio/generations"
IDENTIFY = "kling-identify-face"
SYNC = "kling-advanced-lip-sync"
FINAL = ("completed", "failed")
# Status codes worth retrying after a pause (rate limits, busy server, restarts).
RETRY = (429, 502, 503, 504)


class ApiError(Exception):
    """A non-2xx answer: ``status``, the service's one-sentence ``message``, and ``data``."""

    def __init__(self, status: int, message: str, data: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.data = data


class TaskFailed(Exception):
    """A task that ended ``failed``: ``fail_code`` / ``fail_msg`` (also as ``failCode`` /
    ``failMsg``, the wire's names), ``task_id`` and the whole ``task`` as queried."""

    def __init__(self, task: Mapping[str, Any]) -> None:
        self.task = dict(task)
        self.task_id: str = str(task.get("taskId", ""))
        self.fail_code: str | None = task.get("failCode")
        self.fail_msg: str | None = task.get("failMsg")
        super().__init__(
            f"task {self.task_id} failed ({self.fail_code or 'no failCode'}): "
            f"{self.fail_msg or 'no failMsg'}"
        )

    @property
    def failCode(self) -> str | None:  # noqa: N802 - the wire's name
        return self.fail_code

    @property
    def failMsg(self) -> str | None:  # noqa: N802 - the wire's name
        return self.fail_msg


class WebhookVerificationError(Exception):
    pass


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """The callback payload if its Standard Webhooks signature is valid (signed with the
    account's ``whsec_...`` secret, timestamp within ``tolerance_s``); raises otherwise.
    Pass the raw body: re-serialised JSON would not match."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and ts and sigs):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    try:
        sent = int(ts)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old or in the future")
    raw = body.encode() if isinstance(body, str) else body
    key = secret.removeprefix("whsec_")
    try:
        key_bytes = base64.b64decode(key, validate=True)
    except ValueError:
        key_bytes = key.encode()
    mac = hmac.new(key_bytes, msg_id.encode() + b"." + ts.encode() + b"." + raw, hashlib.sha256)
    expected = base64.b64encode(mac.digest()).decode()
    for sig in sigs.split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            payload: dict[str, Any] = json.loads(raw)
            return payload
    raise WebhookVerificationError("no signature matches")


def _is_base64(s: str) -> bool:
    try:
        base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _local_path(source: str | Path) -> Path | None:
    """The local file ``source`` names, or None for a URL, data: URI or Base64. A path
    that does not exist is a ``FileNotFoundError`` here, before any request (sent as it
    is, the server could only say it cannot read files on this machine)."""
    if isinstance(source, Path):
        p = source.expanduser()
    else:
        s = source.strip()
        if s[:8].lower().startswith(("http://", "https://", "data:")) or len(s) >= 4096:
            return None
        if s[:7].lower() == "file://":
            s = urllib.parse.unquote(urllib.parse.urlsplit(s).path)
        p = Path(s).expanduser()
        if not p.is_file():
            # Base64 has no '.', '\\' or '~' and starts with '/' only by chance: such a
            # string that is no file is a path to a missing file.
            pathlike = s.startswith(("./", "../", "~")) or "." in s or "\\" in s or (
                s.startswith("/") and not _is_base64(s)
            ) or source.strip()[:7].lower() == "file://"
            if not pathlike:
                return None
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise FileNotFoundError(2, f"{p} {what}: give the path of a video or audio file", str(p))
    return p


def _download_url(task_or_url: str | Mapping[str, Any]) -> str:
    """The URL to fetch: a lip-sync task's result (TaskFailed for a failed task), or the
    URL given."""
    if isinstance(task_or_url, str):
        return task_or_url
    task = task_or_url
    if task.get("state") == "failed":
        raise TaskFailed(task)
    urls = task.get("resultUrls") or []
    if not urls:
        raise ValueError(
            f"task {task.get('taskId')} has no result to download (state "
            f"{task.get('state')!r}): wait for a completed lip-sync task"
        )
    return str(urls[0])


def _target(path: str | Path, url: str) -> Path:
    """``path``, or the URL's file name inside ``path`` when it is a directory."""
    p = Path(path).expanduser()
    if p.is_dir():
        name = Path(urllib.parse.urlsplit(url).path).name or "result.mp4"
        p = p / name
    return p


def _final(task: dict[str, Any], check: bool) -> dict[str, Any]:
    if check and task["state"] == "failed":
        raise TaskFailed(task)
    return task


def _check(r: httpx.Response) -> Any:
    try:
        body = r.json()
    except ValueError:
        raise ApiError(r.status_code, r.text[:200] or r.reason_phrase) from None
    if r.status_code >= 400 or body.get("code", 200) >= 400:
        raise ApiError(r.status_code, body.get("msg", ""), body.get("data"))
    return body["data"]


def _sync_body(
    session_id: str,
    faces: Sequence[Mapping[str, Any]],
    callback_url: str | None,
    external_task_id: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": SYNC, "session_id": session_id, "face_choose": list(faces)}
    if callback_url:
        body["callback_url"] = callback_url
    if external_task_id:
        body["external_task_id"] = external_task_id
    return body


def _identify_body(
    video_url: str, callback_url: str | None, external_task_id: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": IDENTIFY, "video_url": video_url}
    if callback_url:
        body["callback_url"] = callback_url
    if external_task_id:
        body["external_task_id"] = external_task_id
    return body


def _list_params(
    limit: int, cursor: str | None, model: str | None, state: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    for k, v in (("cursor", cursor), ("model", model), ("state", state)):
        if v is not None:
            params[k] = v
    return params


class Client:
    """Blocking client. ``base_url`` like ``http://127.0.0.1:8000``; ``key`` an API key."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 60.0, retries: int = 5):
        self.retries = retries
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                r = self.http.request(method, path, **kw)
                if r.status_code in RETRY and attempt < self.retries:
                    time.sleep(float(r.headers.get("retry-after") or _retry_after_s(attempt)))
                    continue
                return _check(r)
            except httpx.TransportError:
                # Only reads are repeated: a create may have been accepted although its
                # answer was lost (send external_task_id and retry it yourself).
                if attempt >= self.retries or method != "GET":
                    raise
                time.sleep(_retry_after_s(attempt))
        raise AssertionError("unreachable")

    def upload(self, path: str | Path) -> dict[str, Any]:
        """Upload a local file; ``["url"]`` is usable as video_url or sound_file."""
        p = _local_path(Path(path))
        assert p is not None
        with p.open("rb") as f:
            data: dict[str, Any] = self._call("POST", "/api/v1/files", files={"file": (p.name, f)})
        return data

    def _source(self, source: str | Path) -> str:
        p = _local_path(source)
        return self.upload(p)["url"] if p is not None else str(source)

    def identify(
        self,
        video: str | Path,
        *,
        callback_url: str | None = None,
        external_task_id: str | None = None,
    ) -> dict[str, Any]:
        """Create an identify task for a URL (or a local file, uploaded first)."""
        body = _identify_body(self._source(video), callback_url, external_task_id)
        return dict(self._call("POST", GEN, json=body))

    def lip_sync(
        self,
        session_id: str,
        faces: Sequence[Mapping[str, Any]],
        *,
        callback_url: str | None = None,
        external_task_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a lip-sync task; ``faces`` are face_choose entries (sound_file may be a
        local file: it is uploaded first)."""
        entries = [{**f, "sound_file": self._source(f["sound_file"])} for f in faces]
        body = _sync_body(session_id, entries, callback_url, external_task_id)
        return dict(self._call("POST", GEN, json=body))

    def get(self, task_id: str, *, wait: float = 0) -> dict[str, Any]:
        """The task as the service reports it; ``wait`` (≤ 30 s) holds for a final state."""
        params: dict[str, Any] = {"task_id": task_id}
        if wait:
            params["wait"] = min(wait, 30)
        return dict(self._call("GET", GEN, params=params, timeout=wait + 30))

    def wait(self, task_id: str, *, timeout: float = 900, check: bool = True) -> dict[str, Any]:
        """The completed task (server-side waits of up to 30 s, so no busy polling);
        ``TaskFailed`` (failCode, failMsg) if it failed, or the failed task itself with
        ``check=False``; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            task = self.get(task_id, wait=max(0, min(30, left)))
            if task["state"] in FINAL:
                return _final(task, check)
            if left <= 0:
                raise TimeoutError(f"task {task_id} is still {task['state']} after {timeout} s")

    def list(
        self,
        *,
        limit: int = 20,
        cursor: str | None = None,
        model: str | None = None,
        state: str | None = None,
    ) -> dict[str, Any]:
        """One page: ``items`` newest first and ``next_cursor`` (None on the last page)."""
        return dict(self._call("GET", GEN, params=_list_params(limit, cursor, model, state)))

    def iter_tasks(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every task of the account, newest first, page after page."""
        cursor = None
        while True:
            page = self.list(cursor=cursor, limit=100, **filters)
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a pending or processing task (it ends failed, failCode 'cancelled')."""
        return dict(self._call("POST", GEN + "/cancel", json={"task_id": task_id}))

    def download(self, url_or_task: str | Mapping[str, Any], path: str | Path) -> Path:
        """Save a result to ``path`` (a file, or a directory to keep the URL's name in):
        a completed lip-sync task (its first resultUrls) or a URL, such as a
        face_reference. Media links are signed, so no API key is sent with them. Written
        to a temporary file beside ``path`` first: a broken download leaves no partial
        file. ``TaskFailed`` for a failed task, ``ApiError`` for an HTTP error."""
        url = urllib.parse.urljoin(str(self.http.base_url) + "/", _download_url(url_or_task))
        target = _target(path, url)
        fd, tmp = tempfile.mkstemp(prefix=".lipdub-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f, httpx.stream(
                "GET", url, timeout=self.http.timeout, follow_redirects=True
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    _check(r)
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def usage(self, days: int = 30) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/usage", params={"days": days}))

    verify_webhook = staticmethod(verify_webhook)


class AsyncClient:
    """The asyncio twin of ``Client``: the same methods, awaited."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 60.0, retries: int = 5):
        self.retries = retries
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                r = await self.http.request(method, path, **kw)
                if r.status_code in RETRY and attempt < self.retries:
                    await asyncio.sleep(
                        float(r.headers.get("retry-after") or _retry_after_s(attempt))
                    )
                    continue
                return _check(r)
            except httpx.TransportError:
                if attempt >= self.retries or method != "GET":
                    raise
                await asyncio.sleep(_retry_after_s(attempt))
        raise AssertionError("unreachable")

    async def upload(self, path: str | Path) -> dict[str, Any]:
        p = _local_path(Path(path))
        assert p is not None
        content = await asyncio.to_thread(p.read_bytes)
        data: dict[str, Any] = await self._call(
            "POST", "/api/v1/files", files={"file": (p.name, content)}
        )
        return data

    async def _source(self, source: str | Path) -> str:
        p = _local_path(source)
        return (await self.upload(p))["url"] if p is not None else str(source)

    async def identify(
        self,
        video: str | Path,
        *,
        callback_url: str | None = None,
        external_task_id: str | None = None,
    ) -> dict[str, Any]:
        body = _identify_body(await self._source(video), callback_url, external_task_id)
        return dict(await self._call("POST", GEN, json=body))

    async def lip_sync(
        self,
        session_id: str,
        faces: Sequence[Mapping[str, Any]],
        *,
        callback_url: str | None = None,
        external_task_id: str | None = None,
    ) -> dict[str, Any]:
        entries = [{**f, "sound_file": await self._source(f["sound_file"])} for f in faces]
        body = _sync_body(session_id, entries, callback_url, external_task_id)
        return dict(await self._call("POST", GEN, json=body))

    async def get(self, task_id: str, *, wait: float = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"task_id": task_id}
        if wait:
            params["wait"] = min(wait, 30)
        return dict(await self._call("GET", GEN, params=params, timeout=wait + 30))

    async def wait(
        self, task_id: str, *, timeout: float = 900, check: bool = True
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            task = await self.get(task_id, wait=max(0, min(30, left)))
            if task["state"] in FINAL:
                return _final(task, check)
            if left <= 0:
                raise TimeoutError(f"task {task_id} is still {task['state']} after {timeout} s")

    async def list(
        self,
        *,
        limit: int = 20,
        cursor: str | None = None,
        model: str | None = None,
        state: str | None = None,
    ) -> dict[str, Any]:
        return dict(
            await self._call("GET", GEN, params=_list_params(limit, cursor, model, state))
        )

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return dict(await self._call("POST", GEN + "/cancel", json={"task_id": task_id}))

    async def download(self, url_or_task: str | Mapping[str, Any], path: str | Path) -> Path:
        """As ``Client.download``."""
        url = urllib.parse.urljoin(str(self.http.base_url) + "/", _download_url(url_or_task))
        target = _target(path, url)
        fd, tmp = tempfile.mkstemp(prefix=".lipdub-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                async with httpx.AsyncClient(
                    timeout=self.http.timeout, follow_redirects=True
                ) as plain, plain.stream("GET", url) as r:
                    if r.status_code >= 400:
                        await r.aread()
                        _check(r)
                    async for chunk in r.aiter_bytes(1 << 20):
                        await asyncio.to_thread(f.write, chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    async def usage(self, days: int = 30) -> dict[str, Any]:
        return dict(await self._call("GET", "/api/v1/usage", params={"days": days}))

    verify_webhook = staticmethod(verify_webhook)


def _retry_after_s(attempt: int) -> float:
    """Exponential back-off when the server did not say how long: 0.5 s doubling, ≤ 30 s."""
    return min(30.0, 0.5 * 2**attempt)

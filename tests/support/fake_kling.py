"""A fake of Kling's official API, written from its public documentation, as a real HTTP
server on loopback: what lipdub's Kling engine is tested against.

What it does as Kling documents it:

- Envelope ``{code, message, request_id, data}``, code 0 on success; errors carry no
  ``data`` and the documented HTTP status (401 1000-1004, 429 1100-1102, 403 1103,
  400 1200/1201, 404 1202/1203, 400 1300/1301, 429 1302-1304, 500/503/504 5000-5002).
- Auth: ``Authorization: Bearer <JWT>``, HS256 signed with the SecretKey, ``iss`` the
  AccessKey, ``exp``/``nbf`` checked (1004 expired, 1003 not yet valid), or a plain API key.
- ``POST /v1/videos/identify-face``: exactly one of video_id / video_url; the video is
  really downloaded and checked (mp4/mov <= 100 MB, 2-60 s, sides 512-2160 px).
- ``POST /v1/videos/advanced-lip-sync``: session, one face, audio_id | sound_file
  (Base64 or URL, <= 5 MB), >= 2 s of audio on the face's span, external_task_id unique.
- ``GET /v1/videos/advanced-lip-sync/{task_id}`` and the list (pageNum 1-1000,
  pageSize 1-500, newest first); ids are long digit strings.
- Tasks move submitted -> processing -> succeed | failed with time, and each change is
  POSTed to the task's callback_url.

What a test can ask of it: ``fail_next`` (any error family, on any route, optionally
after creating the task, as a timeout that did the work), ``outage`` (every route
answers 5001 until ``restore``), a rate limit (1302) and a concurrency limit (1303),
``hold_submits`` (the task is created but the answer waits: a client killed meanwhile
never learns it), ``outcome`` (how tasks end), and it counts what it saw.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt

HTTP_OF = {
    1000: 401, 1001: 401, 1002: 401, 1003: 401, 1004: 401,
    1100: 429, 1101: 429, 1102: 429, 1103: 403,
    1200: 400, 1201: 400, 1202: 404, 1203: 404,
    1300: 400, 1301: 400, 1302: 429, 1303: 429, 1304: 429,
    5000: 500, 5001: 503, 5002: 504,
}
MAX_VIDEO_BYTES = 100 * 1024 * 1024
MAX_AUDIO_BYTES = 5 * 1024 * 1024
IDENTIFY, SUBMIT, QUERY, LIST = "identify", "submit", "query", "list"


class Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Fault:
    route: str  # identify | submit | query | list | any
    code: int
    message: str
    times: int
    # submit only: create the task first, then answer the error (a timeout that did
    # the work): the client must look before it submits again.
    created: bool = False


@dataclass
class FakeTask:
    task_id: str
    external_task_id: str
    session_id: str
    face_id: str
    callback_url: str | None
    created_ms: int
    outcome: str
    status_msg: str
    processing_after_s: float
    done_after_s: float
    started: float = field(default_factory=time.monotonic)
    last_status: str = ""

    def status(self) -> str:
        age = time.monotonic() - self.started
        if age < self.processing_after_s:
            return "submitted"
        if age < self.done_after_s:
            return "processing"
        return self.outcome


def _digits(n: int = 18) -> str:
    return str(secrets.randbelow(9 * 10 ** (n - 1)) + 10 ** (n - 1))


class FakeKling:
    def __init__(
        self,
        access_key: str = "ak-test-access",
        secret_key: str = "sk-test-secret",
        api_key: str = "",
        result_video: Path | None = None,
        face_image: bytes | None = None,
        processing_after_s: float = 0.3,
        done_after_s: float = 1.0,
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.api_key = api_key
        self.result_video = result_video
        self.face_image = face_image or _grey_jpeg()
        self.processing_after_s = processing_after_s
        self.done_after_s = done_after_s
        # How tasks end, and the failure message Kling gives.
        self.outcome = "succeed"
        self.fail_msg = "Lip-sync failed: the face is not clear enough."
        # Faces identify reports for every video: (start_ms, end_ms) or None = whole video.
        self.faces: list[tuple[int, int] | None] = [None]
        self.charge_identify = "0.05"
        self.charge_sync = "0.5"
        self.rate_limit_per_s = 0  # 0 = none
        self.max_running = 0  # 0 = none
        self.faults: list[Fault] = []
        self._outage: int | None = None
        self.hold_submits = threading.Event()  # set: created tasks' answers wait
        self._release = threading.Event()
        self.lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, FakeTask] = {}
        self.seen: list[tuple[str, str, int, int]] = []  # (method, path, http, code)
        self.submits_created = 0
        self.identified: list[str] = []  # every video_url identify was given
        self.submitted: list[dict[str, Any]] = []  # every lip-sync body that made a task
        self.callbacks: list[tuple[str, int]] = []  # (task_id status, http status)
        self._hits: list[float] = []
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._callback_loop, daemon=True).start()

    # --- what tests ask -------------------------------------------------------------

    def fail_next(
        self, route: str, code: int, message: str = "", times: int = 1, created: bool = False
    ) -> None:
        with self.lock:
            self.faults.append(Fault(route, code, message or f"fault {code}", times, created))

    def outage(self, code: int = 5001) -> None:
        self._outage = code

    def restore(self) -> None:
        self._outage = None

    def release_submits(self) -> None:
        self.hold_submits.clear()
        self._release.set()

    def count(self, route_method: str, path_prefix: str) -> int:
        return sum(1 for m, p, _, _ in self.seen if m == route_method and p.startswith(path_prefix))

    @property
    def env(self) -> dict[str, str]:
        """lipdub's settings for this fake."""
        return {
            "LIPDUB_KLING_BASE_URL": self.base_url,
            "LIPDUB_KLING_ACCESS_KEY": self.access_key,
            "LIPDUB_KLING_SECRET_KEY": self.secret_key,
        }

    def close(self) -> None:
        self._stop.set()
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    # --- the API --------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake._serve(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._serve(self, "POST")

            def log_message(self, *a: Any) -> None:
                pass

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(h.path)
        path, query = parts.path, urllib.parse.parse_qs(parts.query)
        n = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(n) if n else b""
        if method == "GET" and path.startswith("/cdn/"):
            return self._cdn(h, path)
        request_id = _digits(12)
        try:
            route = self._route(method, path)
            self._authenticate(h.headers.get("Authorization"))
            after = self._faults_for(route)
            self._limits(route)
            body = json.loads(raw or b"{}") if method == "POST" else {}
            if not isinstance(body, dict):
                raise Refused(1200, "request body must be a JSON object")
            data = self._answer(route, path, query, body, after)
        except Refused as e:
            self.seen.append((method, path, HTTP_OF.get(e.code, 400), e.code))
            return _send(h, HTTP_OF.get(e.code, 400), {
                "code": e.code, "message": e.message, "request_id": request_id,
            })
        except ValueError:
            self.seen.append((method, path, 400, 1200))
            return _send(h, 400, {"code": 1200, "message": "invalid JSON",
                                  "request_id": request_id})
        self.seen.append((method, path, 200, 0))
        if route == SUBMIT and self.hold_submits.is_set():
            self._release.wait(60)  # the task exists; its creator may be dead by now
        _send(h, 200, {"code": 0, "message": "SUCCEED", "request_id": request_id, "data": data})

    def _route(self, method: str, path: str) -> str:
        if method == "POST" and path == "/v1/videos/identify-face":
            return IDENTIFY
        if method == "POST" and path == "/v1/videos/advanced-lip-sync":
            return SUBMIT
        if method == "GET" and path == "/v1/videos/advanced-lip-sync":
            return LIST
        if method == "GET" and path.startswith("/v1/videos/advanced-lip-sync/"):
            return QUERY
        raise Refused(1202, f"{method} {path}: no such method")

    def _authenticate(self, header: str | None) -> None:
        if not header:
            raise Refused(1001, "Authorization is empty")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            raise Refused(1002, "Authorization is invalid")
        if self.api_key and token == self.api_key:
            return
        try:
            claims = jwt.decode(
                token, self.secret_key, algorithms=["HS256"],
                options={"require": ["iss", "exp", "nbf"]},
            )
        except jwt.ExpiredSignatureError:
            raise Refused(1004, "Authorization has expired") from None
        except jwt.ImmatureSignatureError:
            raise Refused(1003, "Authorization is not yet valid") from None
        except jwt.InvalidTokenError:
            raise Refused(1002, "Authorization is invalid") from None
        if claims.get("iss") != self.access_key:
            raise Refused(1000, "Authentication failed")

    def _faults_for(self, route: str) -> Fault | None:
        """Raise the fault due now; a fault due after the work is done is returned."""
        if self._outage is not None:
            raise Refused(self._outage, "Server temporarily unavailable")
        with self.lock:
            for f in self.faults:
                if f.route in (route, "any") and f.times > 0:
                    f.times -= 1
                    if f.created:
                        return f
                    raise Refused(f.code, f.message)
        return None

    def _limits(self, route: str) -> None:
        now = time.monotonic()
        with self.lock:
            self._hits = [t for t in self._hits if now - t < 1.0] + [now]
            if self.rate_limit_per_s and len(self._hits) > self.rate_limit_per_s:
                raise Refused(1302, "Rate limit exceeded")
            # Kling: a task holds concurrency from submitted until it ends; only task
            # creation is limited, queries are not.
            if route == SUBMIT and self.max_running:
                running = sum(1 for t in self.tasks.values()
                              if t.status() in ("submitted", "processing"))
                if running >= self.max_running:
                    raise Refused(1303, "parallel task over resource pack limit")

    def _answer(
        self,
        route: str,
        path: str,
        query: dict[str, list[str]],
        body: dict[str, Any],
        after: Fault | None,
    ) -> Any:
        if route == IDENTIFY:
            return self._identify(body)
        if route == SUBMIT:
            task = self._create(body)
            if after is not None:
                raise Refused(after.code, after.message)
            return {
                "task_id": task.task_id,
                "task_info": {"external_task_id": task.external_task_id},
                "task_status": "submitted",
                "created_at": task.created_ms,
                "updated_at": task.created_ms,
            }
        if route == QUERY:
            task_id = path.rsplit("/", 1)[-1]
            task = self.tasks.get(task_id)
            if task is None:
                raise Refused(1203, f"task {task_id} does not exist")
            return self._task_object(task)
        page = _int_in(query, "pageNum", 1, 1, 1000)
        size = _int_in(query, "pageSize", 30, 1, 500)
        ordered = sorted(self.tasks.values(), key=lambda t: t.created_ms, reverse=True)
        return [self._task_object(t) for t in ordered[(page - 1) * size: page * size]]

    def _identify(self, body: dict[str, Any]) -> dict[str, Any]:
        video_id, video_url = body.get("video_id") or "", body.get("video_url") or ""
        if bool(video_id) == bool(video_url):
            raise Refused(1201, "exactly one of video_id and video_url must be given")
        if video_id:
            raise Refused(1201, f"video_id {video_id} is not a video generated by this account")
        self.identified.append(video_url)
        try:
            r = httpx.get(video_url, timeout=30)
        except httpx.HTTPError as e:
            raise Refused(1201, f"video_url could not be downloaded: {e}") from None
        if r.status_code != 200:
            raise Refused(1201, f"video_url answered HTTP {r.status_code}")
        if len(r.content) > MAX_VIDEO_BYTES:
            raise Refused(1201, "video is larger than 100MB")
        width, height, duration_ms = _probe(r.content)
        if not 2000 <= duration_ms <= 60000:
            raise Refused(1201, f"video duration {duration_ms} ms is outside 2-60 s")
        if not (min(width, height) >= 512 and max(width, height) <= 2160):
            raise Refused(1201, f"video is {width}x{height}; sides must be 512-2160 px")
        session_id = _digits()
        faces = []
        for i, span in enumerate(self.faces):
            start, end = span or (0, duration_ms)
            faces.append({
                "face_id": str(i),
                "face_image": f"{self.base_url}/cdn/face/{session_id}/{i}.jpg",
                "start_time": start,
                "end_time": end,
            })
        self.sessions[session_id] = {"faces": faces, "duration_ms": duration_ms}
        return {
            "session_id": session_id,
            "final_unit_deduction": self.charge_identify,
            "face_data": faces,
        }

    def _create(self, body: dict[str, Any]) -> FakeTask:
        session = self.sessions.get(str(body.get("session_id") or ""))
        if session is None:
            raise Refused(1201, "session_id is invalid or expired")
        choose = body.get("face_choose")
        if not isinstance(choose, list) or len(choose) != 1:
            raise Refused(1201, "face_choose must hold exactly one face")
        fc = choose[0]
        face = next((f for f in session["faces"] if f["face_id"] == fc.get("face_id")), None)
        if face is None:
            raise Refused(1201, f"face_id {fc.get('face_id')!r} is not in the session")
        if bool(fc.get("audio_id")) == bool(fc.get("sound_file")):
            raise Refused(1201, "exactly one of audio_id and sound_file must be given")
        if fc.get("audio_id"):
            raise Refused(1201, "audio_id is not a TTS audio of this account")
        audio = _sound(str(fc["sound_file"]))
        if len(audio) > MAX_AUDIO_BYTES:
            raise Refused(1201, "sound_file is larger than 5MB")
        start, end = int(fc.get("sound_start_time", 0)), int(fc.get("sound_end_time", 0))
        insert = int(fc.get("sound_insert_time", 0))
        if end - start < 2000:
            raise Refused(1201, "the audio clip must last at least 2 s")
        overlap = min(face["end_time"], insert + end - start) - max(face["start_time"], insert)
        if overlap < 2000:
            raise Refused(1201, "at least 2 s of audio must overlap the face's time")
        for name in ("sound_volume", "original_audio_volume"):
            if not 0 <= float(fc.get(name, 1)) <= 2:
                raise Refused(1201, f"{name} must be within 0-2")
        external = str(body.get("external_task_id") or "")
        with self.lock:
            if external and any(t.external_task_id == external for t in self.tasks.values()):
                raise Refused(1201, f"external_task_id {external} already exists")
            task = FakeTask(
                task_id=_digits(), external_task_id=external, session_id=body["session_id"],
                face_id=face["face_id"], callback_url=body.get("callback_url") or None,
                created_ms=int(time.time() * 1000), outcome=self.outcome,
                status_msg=self.fail_msg if self.outcome == "failed" else "",
                processing_after_s=self.processing_after_s, done_after_s=self.done_after_s,
            )
            self.tasks[task.task_id] = task
            self.submits_created += 1
            self.submitted.append(body)
        return task

    def _task_object(self, task: FakeTask) -> dict[str, Any]:
        status = task.status()
        obj: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": status,
            "task_status_msg": task.status_msg if status == "failed" else "",
            "task_info": {"external_task_id": task.external_task_id},
            "created_at": task.created_ms,
            "updated_at": int(time.time() * 1000),
        }
        if status == "succeed":
            obj["final_unit_deduction"] = self.charge_sync
            obj["task_result"] = {"videos": [{
                "id": _digits(), "url": f"{self.base_url}/cdn/result/{task.task_id}.mp4",
                "duration": f"{self.sessions[task.session_id]['duration_ms'] / 1000:.1f}",
            }]}
        return obj

    def _cdn(self, h: BaseHTTPRequestHandler, path: str) -> None:
        if path.startswith("/cdn/face/"):
            return _send_bytes(h, 200, self.face_image, "image/jpeg")
        if path.startswith("/cdn/result/") and self.result_video is not None:
            return _send_bytes(h, 200, self.result_video.read_bytes(), "video/mp4")
        return _send_bytes(h, 404, b"missing", "text/plain")

    def _callback_loop(self) -> None:
        """POST the task object to its callback_url on each status change."""
        while not self._stop.wait(0.05):
            for task in list(self.tasks.values()):
                status = task.status()
                if not task.callback_url or status == task.last_status:
                    continue
                task.last_status = status
                try:
                    r = httpx.post(task.callback_url, json=self._task_object(task), timeout=5)
                    self.callbacks.append((f"{task.task_id} {status}", r.status_code))
                except httpx.HTTPError:
                    self.callbacks.append((f"{task.task_id} {status}", 0))


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _send(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    _send_bytes(h, status, json.dumps(body).encode(), "application/json")


def _send_bytes(h: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str) -> None:
    with contextlib.suppress(OSError):  # the client may be gone (killed mid-request)
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def _int_in(query: dict[str, list[str]], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name, [str(default)])[0]
    try:
        value = int(raw)
    except ValueError:
        raise Refused(1201, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise Refused(1201, f"{name} must be within {lo}-{hi}")
    return value


def _sound(value: str) -> bytes:
    if value.startswith(("http://", "https://")):
        try:
            r = httpx.get(value, timeout=30)
        except httpx.HTTPError as e:
            raise Refused(1201, f"sound_file could not be downloaded: {e}") from None
        if r.status_code != 200:
            raise Refused(1201, f"sound_file answered HTTP {r.status_code}")
        return r.content
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(1201, "sound_file is neither a URL nor Base64") from None
    if not data:
        raise Refused(1201, "sound_file is empty")
    return data


def _probe(data: bytes) -> tuple[int, int, int]:
    import io

    import av

    try:
        with av.open(io.BytesIO(data)) as c:
            v = c.streams.video[0]
            duration = c.duration or 0
            return int(v.width), int(v.height), int(duration * 1000 // av.time_base)
    except (av.FFmpegError, IndexError):
        raise Refused(1201, "video_url is not an mp4/mov video") from None


def _grey_jpeg() -> bytes:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.full((96, 96, 3), 128, np.uint8))
    assert ok
    return bytes(buf)

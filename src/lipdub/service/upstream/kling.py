"""A client of Kling's official API (identify-face and advanced lip-sync).

Every answer is Kling's envelope ``{code, message, request_id, data}``: ``code`` 0 is
success, anything else a ``KlingError`` carrying the HTTP status and Kling's code (its
failure class is decided in ``failures``). A request that never got an answer (refused,
reset, timed out) is a ``KlingUnreachable``: whether Kling acted on it is unknown, so
callers that create things look before they try again.

Authentication: with an AccessKey and SecretKey each request carries a JWT (HS256,
``iss`` the AccessKey, valid 30 minutes from 5 s ago, Kling's documented shape), signed
again 5 minutes before it expires; with an API key the key itself is the bearer.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import jwt

from lipdub.config import Settings

# Kling's documented token shape: valid for 30 minutes, from 5 s ago (clock skew).
TOKEN_TTL_S = 1800
TOKEN_NBF_SKEW_S = 5
# A token is replaced this long before it expires, so none expires in flight.
TOKEN_REFRESH_S = 300
# The list endpoint's largest page (documented 1-500) and how far back a lost task is
# looked for: a task is looked for only by the attempt after the one that created it.
LIST_PAGE_SIZE = 500
LIST_PAGES = 4


class KlingError(Exception):
    """Kling answered with an error (``code`` its code, None if the body was no envelope)."""

    def __init__(
        self, status: int, code: int | None, message: str, request_id: str | None = None
    ) -> None:
        super().__init__(f"HTTP {status}, Kling code {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id


class KlingUnreachable(KlingError):
    """No answer at all (connection refused or cut, timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, None, message)


class KlingClient:
    def __init__(
        self,
        base_url: str,
        *,
        access_key: str = "",
        secret_key: str = "",
        api_key: str = "",
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_key = access_key
        self.secret_key = secret_key
        self.api_key = api_key
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            # Kling's answers are small JSON; a redirect would be a misconfigured base.
            follow_redirects=False,
        )
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, s: Settings) -> KlingClient:
        return cls(
            s.kling_base_url,
            access_key=s.kling_access_key,
            secret_key=s.kling_secret_key,
            api_key=s.kling_api_key,
            timeout_s=s.kling_timeout_s,
            connect_timeout_s=s.kling_connect_timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def problem(self) -> str | None:
        """Why this client cannot work (missing settings), for the operator; else None."""
        if not self.base_url.startswith(("http://", "https://")):
            return f"LIPDUB_KLING_BASE_URL={self.base_url!r} is not an http(s) URL"
        if self.api_key or (self.access_key and self.secret_key):
            return None
        if self.access_key or self.secret_key:
            return "only one of LIPDUB_KLING_ACCESS_KEY and LIPDUB_KLING_SECRET_KEY is set"
        return (
            "no Kling credentials are set (LIPDUB_KLING_ACCESS_KEY and LIPDUB_KLING_SECRET_KEY, "
            "or LIPDUB_KLING_API_KEY)"
        )

    def bearer(self) -> str:
        if self.api_key:
            return self.api_key
        with self._lock:
            now = time.time()
            if self._token is None or self._token[1] - now < TOKEN_REFRESH_S:
                claims = {
                    "iss": self.access_key,
                    "exp": int(now) + TOKEN_TTL_S,
                    "nbf": int(now) - TOKEN_NBF_SKEW_S,
                }
                token = jwt.encode(
                    claims, self.secret_key, algorithm="HS256", headers={"typ": "JWT"}
                )
                self._token = (token, now + TOKEN_TTL_S)
            return self._token[0]

    # --- the calls ---------------------------------------------------------------------

    def identify(self, video_url: str) -> dict[str, Any]:
        """POST /v1/videos/identify-face (synchronous): session_id and face_data."""
        return self._call("POST", "/v1/videos/identify-face", json={"video_url": video_url})

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/videos/advanced-lip-sync: the new task (task_id, task_status...)."""
        return self._call("POST", "/v1/videos/advanced-lip-sync", json=body)

    def task(self, task_id: str) -> dict[str, Any]:
        """GET /v1/videos/advanced-lip-sync/{task_id}."""
        return self._call("GET", f"/v1/videos/advanced-lip-sync/{task_id}")

    def list_tasks(self, page: int, size: int = LIST_PAGE_SIZE) -> list[dict[str, Any]]:
        """GET /v1/videos/advanced-lip-sync?pageNum=&pageSize= (newest first)."""
        data = self._call(
            "GET", "/v1/videos/advanced-lip-sync", params={"pageNum": page, "pageSize": size}
        )
        return list(data) if isinstance(data, list) else []

    def find_by_external_id(self, external_task_id: str) -> dict[str, Any] | None:
        """The task submitted with this external_task_id, if Kling has one: how a retry
        learns that an earlier attempt's submit went through before it could say so."""
        for page in range(1, LIST_PAGES + 1):
            tasks = self.list_tasks(page)
            for task in tasks:
                info = task.get("task_info") or {}
                if info.get("external_task_id") == external_task_id:
                    return task
            if len(tasks) < LIST_PAGE_SIZE:
                return None
        return None

    def _call(
        self,
        method: str,
        path: str,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.bearer()}"}
        try:
            r = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.HTTPError as e:
            raise KlingUnreachable(f"{type(e).__name__}: {e}") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "code" not in body:
            raise KlingError(r.status_code, None, f"not Kling's envelope: {r.text[:200]!r}")
        code = body.get("code")
        if r.status_code != 200 or code != 0:
            raise KlingError(
                r.status_code,
                int(code) if isinstance(code, int) else None,
                str(body.get("message") or ""),
                body.get("request_id"),
            )
        return body.get("data")

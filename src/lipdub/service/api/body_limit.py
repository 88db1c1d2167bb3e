"""Caps request bodies before the framework buffers them (JSON with inline Base64, and
multipart uploads, are otherwise read whole into memory or temp files)."""

from __future__ import annotations

from typing import Any

from lipdub.service.api.envelope import PREFIX, envelope
from lipdub.service.api.kling import codes as kling

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            msg: Message = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Any, send: Any) -> None:
        mb = self.max_bytes // (1024 * 1024)
        message = (
            f"The request body is larger than {mb} MB: upload big files with "
            f"POST {PREFIX}/files and pass the returned URL."
        )
        # The rest of the body is never read: this connection cannot carry another.
        headers = {"connection": "close"}
        if kling.is_kling_path(scope.get("path", "")):
            response = kling.error_response(
                kling.KlingError(400, kling.BAD_PARAMETER, message, headers)
            )
        else:
            response = envelope(400, message, headers=headers)
        await response(scope, receive, send)

"""Media storage on local disk, and signed, expiring URLs to serve it without API keys.

Keys are relative paths like ``tasks/<id>/result.mp4``; the service hands out
``<public_url>/media/<key>?e=<expiry ms>&s=<signature>``. The signature is an HMAC of the
key and the expiry with the service's secret, so a URL cannot be altered to reach
another file or live longer, and API and workers on other machines agree on it as long
as they share the secret and the storage directory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import urllib.parse
from pathlib import Path


class LocalStorage:
    def __init__(self, root: Path, public_url: str, secret: bytes) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.public_url = public_url.rstrip("/")
        self._secret = secret

    def path(self, key: str) -> Path:
        """The file behind ``key``; refuses keys that would leave the storage root."""
        p = (self.root / key).resolve()
        if not p.is_relative_to(self.root) or p == self.root:
            raise ValueError(f"storage key {key!r} leaves the storage root")
        return p

    def delete_prefix(self, prefix: str) -> None:
        p = self.path(prefix)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)

    def _sign(self, key: str, expires_ms: int) -> str:
        mac = hmac.new(self._secret, f"{key}\n{expires_ms}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    def signed_url(self, key: str, expires_ms: int) -> str:
        quoted = urllib.parse.quote(key)
        return f"{self.public_url}/media/{quoted}?e={expires_ms}&s={self._sign(key, expires_ms)}"

    def verify(self, key: str, expires_ms: int, signature: str, now_ms: int) -> bool:
        if expires_ms < now_ms:
            return False
        # As bytes: compare_digest refuses non-ASCII str, and a signature is whatever a
        # client put in the query string.
        given = signature.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(self._sign(key, expires_ms).encode(), given)

    def key_from_own_url(self, url: str, now_ms: int) -> str | None:
        """The key of a valid, unexpired URL that this service signed, else None.

        Lets clients pass an uploaded file's URL as ``video_url`` without the service
        fetching from itself over HTTP (which the private-address rule would refuse)."""
        prefix = self.public_url + "/media/"
        if not url.startswith(prefix):
            return None
        parts = urllib.parse.urlsplit(url)
        key = urllib.parse.unquote(url[len(prefix) :].split("?", 1)[0])
        q = urllib.parse.parse_qs(parts.query)
        try:
            e = int(q["e"][0])
            s = q["s"][0]
        except (KeyError, IndexError, ValueError):
            return None
        if not self.verify(key, e, s, now_ms):
            return None
        try:
            return key if self.path(key).is_file() else None
        except ValueError:
            return None

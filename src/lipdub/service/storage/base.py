"""Media storage behind one interface, and signed, expiring URLs to serve it without keys.

Two implementations: ``LocalStorage`` (a directory, the embedded default, in ``local``)
and ``S3Storage`` (any S3-compatible service, in ``s3``), chosen by
``LIPDUB_STORAGE_URL`` (``file:///path`` or ``s3://bucket/prefix``). Nothing outside this
package touches media by path: the API and the workers move whole
objects in and out of their own scratch directories (``put_file`` / ``get_file``), so a
worker needs no disk shared with the API.

Keys are relative paths like ``tasks/<id>/attempts/<attempt>/result.mp4``; the service
hands out ``<public_url>/media/<key>?e=<expiry ms>&s=<signature>``. The signature is an
HMAC of the key and the expiry with the service's secret, so a URL cannot be altered to
reach another file or live longer. These links stay the same whatever the backend: the
``/media`` route serves the file (local), or streams it from the bucket or redirects to
a presigned URL (S3, see ``LIPDUB_STORAGE_LINKS``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path


class StorageUnavailable(Exception):
    """The storage service could not be reached or answered with an error: transient."""


class MissingObject(Exception):
    """No object under this key (never written, deleted, or purged after retention)."""


class Storage(ABC):
    """What the service needs from media storage; keys are '/'-separated relative paths."""

    def __init__(self, url: str, public_url: str, secret: bytes) -> None:
        self.url = url
        self.public_url = public_url.rstrip("/")
        self._secret = secret

    # --- objects (each backend) ----------------------------------------------------

    @abstractmethod
    def put_file(self, key: str, src: Path) -> None:
        """Store the file ``src`` under ``key``, replacing any object there, atomically."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> None:
        """Copy the object into ``dest`` (MissingObject if there is none)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes, None if there is none."""

    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, last-modified ms) of every object under ``prefix/``."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Delete the object ``prefix`` and every object under ``prefix/``."""

    @abstractmethod
    def local_path(self, key: str) -> Path | None:
        """The file behind ``key`` if this backend is a local directory, else None."""

    @abstractmethod
    def open_stream(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks (MissingObject if there is none)."""

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A direct, time-limited link to the object, if the backend can make one."""
        return None

    # --- derived -------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def put_tree(self, prefix: str, directory: Path) -> None:
        """Store every file under ``directory`` at ``prefix/<relative path>``."""
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                self.put_file(f"{prefix}/{path.relative_to(directory).as_posix()}", path)

    def get_tree(self, prefix: str, directory: Path) -> int:
        """Copy every object under ``prefix/`` into ``directory``; returns the count."""
        n = 0
        for key, _ in list(self.list_keys(prefix)):
            rel = key[len(prefix) + 1 :]
            dest = (directory / rel).resolve()
            if not dest.is_relative_to(directory.resolve()):
                raise ValueError(f"storage key {key!r} leaves {directory}")
            self.get_file(key, dest)
            n += 1
        return n

    # --- signed links --------------------------------------------------------------

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
            return key if self.exists(key) else None
        except ValueError:
            return None


def check_key(key: str) -> str:
    """Refuse keys that are absolute, empty, climb out or hold an empty part (``a//b``):
    the same rule for every backend, so a key one backend accepts the other accepts too."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"storage key {key!r} is not a plain relative path")
    return key

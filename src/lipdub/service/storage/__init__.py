"""Media storage: one interface (``base.Storage``), a local directory and S3 behind it.

Layer: below the store and everything else in the service; imports nothing of the
service but its own modules. Keys follow one rule for every backend (``check_key``).
``open_storage`` picks the backend ``LIPDUB_STORAGE_URL`` names; the S3 module (and
boto3) is imported only when it is used.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from lipdub.service.storage.base import MissingObject, Storage, StorageUnavailable, check_key
from lipdub.service.storage.local import LocalStorage

__all__ = [
    "LocalStorage",
    "MissingObject",
    "Storage",
    "StorageUnavailable",
    "check_key",
    "open_storage",
]


def open_storage(url: str, default_root: Path, public_url: str, secret: bytes) -> Storage:
    """The backend ``LIPDUB_STORAGE_URL`` names; empty means a directory under the data dir."""
    if not url:
        return LocalStorage(default_root, public_url, secret)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return LocalStorage(Path(urllib.parse.unquote(parts.path)), public_url, secret)
    if parts.scheme == "s3":
        from lipdub.service.storage.s3 import S3Storage

        return S3Storage.from_url(url, public_url, secret)
    raise ValueError(
        f"LIPDUB_STORAGE_URL={url!r} is not file:///path or s3://bucket/prefix: fix it."
    )

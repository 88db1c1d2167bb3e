"""Media in a directory (the embedded default): ``file:///path`` or the data dir's media/.

Every key passes ``check_key`` first (the rule every backend applies), then must resolve
inside the root: a symlink inside the tree cannot lead out of it either.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from lipdub.service.storage.base import MissingObject, Storage, check_key


class LocalStorage(Storage):
    def __init__(self, root: Path, public_url: str, secret: bytes) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        super().__init__(self.root.as_uri(), public_url, secret)

    def path(self, key: str) -> Path:
        """The file behind ``key``; refuses keys that break the key rule or would leave
        the storage root (through a symlink)."""
        p = (self.root / check_key(key)).resolve()
        if not p.is_relative_to(self.root) or p == self.root:
            raise ValueError(f"storage key {key!r} leaves the storage root")
        return p

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def put_file(self, key: str, src: Path) -> None:
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Copy beside, then rename: a reader never sees half an object.
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def get_file(self, key: str, dest: Path) -> None:
        src = self.path(key)
        if not src.is_file():
            raise MissingObject(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise MissingObject(key) from None

    def size(self, key: str) -> int | None:
        p = self.path(key)
        return p.stat().st_size if p.is_file() else None

    def list_keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self.path(prefix)
        if not base.is_dir():
            return
        for p in base.rglob("*"):
            if p.is_file() and not p.name.endswith(".part"):
                key = p.relative_to(self.root).as_posix()
                yield key, int(p.stat().st_mtime * 1000)

    def delete_prefix(self, prefix: str) -> None:
        p = self.path(prefix)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)

    def open_stream(self, key: str) -> Iterator[bytes]:
        p = self.path(key)
        if not p.is_file():
            raise MissingObject(key)
        with p.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                yield chunk

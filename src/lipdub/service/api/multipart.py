"""Receiving ``POST /api/v1/files``: a multipart body streamed straight to storage.

The framework's own form parsing would spool the whole body to a temporary file before
the endpoint runs, that is before the key, the balance, the quotas and the disk are
checked. Here the endpoint checks all of that first, then this parser writes the file part
as it arrives, with the size cap and the disk watermark enforced while streaming.

The client's file name is returned for the upload's metadata only: it never becomes part
of a path (the storage key is made by the server).
"""

from __future__ import annotations

import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from typing import BinaryIO

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import Request

from lipdub.service.api.errors import HttpError
from lipdub.service.ops.disk import DiskGuard

DISK_CHECK_BYTES = 8 * 1024 * 1024
MAX_NAME_CHARS = 255

NOT_MULTIPART = (
    "Send the file as multipart/form-data with a part named 'file': e.g. "
    "curl -F 'file=@clip.mp4' .../api/v1/files."
)


class UploadTooLarge(Exception):
    pass


@dataclass
class _Parts:
    """State of the multipart callbacks: the headers of the current part, and the bytes
    of the file part that arrived during the last ``write``."""

    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    disposition: bytes = b""
    in_file: bool = False
    found: bool = False
    raw_name: str = ""
    complete: bool = False
    chunks: list[bytes] = field(default_factory=list)

    def on_part_begin(self) -> None:
        self.disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self.header_field).strip().lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if options.get(b"name") == b"file" and not self.found:
            self.in_file = self.found = True
            self.raw_name = _file_name(options)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.chunks.append(bytes(data[start:end]))

    def on_part_end(self) -> None:
        self.in_file = False

    def on_end(self) -> None:
        self.complete = True


def _file_name(options: dict[bytes, bytes]) -> str:
    star = options.get(b"filename*")  # RFC 5987: charset''percent-encoded
    if star is not None and b"''" in star:
        charset, _, encoded = star.decode("latin-1").partition("''")
        try:
            return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="replace")
        except LookupError:
            pass
    return options.get(b"filename", b"").decode("utf-8", "replace")


def display_name(raw: str) -> str:
    """The client's name as plain text metadata: no control characters (NUL cannot even
    be stored in PostgreSQL), bounded length, "file" if nothing is left."""
    clean = "".join(c for c in raw if unicodedata.category(c)[0] != "C")
    return clean.strip()[:MAX_NAME_CHARS] or "file"


async def receive_file(
    request: Request, out: BinaryIO, max_bytes: int, disk: DiskGuard
) -> tuple[str, int]:
    """Stream the part named ``file`` into ``out``; returns (client's name, size)."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise HttpError(400, NOT_MULTIPART)
    parts = _Parts()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": parts.on_part_begin,
            "on_header_field": parts.on_header_field,
            "on_header_value": parts.on_header_value,
            "on_header_end": parts.on_header_end,
            "on_headers_finished": parts.on_headers_finished,
            "on_part_data": parts.on_part_data,
            "on_part_end": parts.on_part_end,
            "on_end": parts.on_end,
        },
    )
    size = 0
    next_disk_check = DISK_CHECK_BYTES
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for data in parts.chunks:
                size += len(data)
                if size > max_bytes:
                    raise UploadTooLarge
                out.write(data)
            parts.chunks.clear()
            if size >= next_disk_check:
                disk.check()  # raises DiskLow: the caller deletes what was written
                next_disk_check = size + DISK_CHECK_BYTES
        parser.finalize()
    except MultipartParseError:
        raise HttpError(400, f"The upload is not valid multipart. {NOT_MULTIPART}") from None
    if not parts.complete:
        raise HttpError(400, "The upload ended before its closing boundary: send it again.")
    if not parts.found:
        raise HttpError(400, f"The upload has no part named 'file'. {NOT_MULTIPART}")
    return display_name(parts.raw_name), size

"""Media on an S3-compatible service (AWS S3, MinIO, Cloudflare R2, ...) through boto3.

``LIPDUB_STORAGE_URL=s3://bucket/prefix``; endpoint, region and credentials come from the
standard variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``), which boto3 reads itself. Every error the service cannot act on
(connection refused, timeouts, 5xx) becomes ``StorageUnavailable``: callers retry it or
answer 503, never 500. Timeouts are short and bounded so a storage outage is noticed in
seconds, not after the default 60 s socket timeout.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lipdub.service.storage.base import MissingObject, Storage, StorageUnavailable, check_key

CHUNK = 1024 * 1024


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ValueError(
            "LIPDUB_STORAGE_URL is s3:// but boto3 is not installed: pip install 'lipdub[s3]'."
        ) from None
    return boto3


class S3Storage(Storage):
    def __init__(
        self, bucket: str, prefix: str, public_url: str, secret: bytes, client: Any
    ) -> None:
        url = f"s3://{bucket}/{prefix}".rstrip("/")
        super().__init__(url, public_url, secret)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        from botocore.exceptions import BotoCoreError, ClientError

        self._client_error = ClientError
        self._transport_errors = (BotoCoreError,)

    @classmethod
    def from_url(cls, url: str, public_url: str, secret: bytes) -> S3Storage:
        parts = urllib.parse.urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"LIPDUB_STORAGE_URL={url!r} names no bucket: s3://bucket/prefix.")
        boto3 = _boto3()
        from botocore.config import Config

        config = Config(
            connect_timeout=3,
            read_timeout=20,
            # "standard" retries throttling and 5xx with back-off; a longer outage is
            # the callers' to handle (they retry the whole step or answer 503).
            retries={"max_attempts": 3, "mode": "standard"},
            # Path-style addressing works with every S3-compatible server (MinIO, moto)
            # and with AWS itself.
            s3={"addressing_style": "path"},
            # SigV4 everywhere (R2 and newer AWS regions accept nothing else).
            signature_version="s3v4",
        )
        client = boto3.session.Session().client("s3", config=config)
        return cls(parts.netloc, parts.path, public_url, secret, client)

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except self._client_error as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                raise MissingObject(kwargs.get("Key", "")) from None
            raise StorageUnavailable(f"{self.url}: {op} failed ({code or status})") from None
        except self._transport_errors as e:
            raise StorageUnavailable(f"{self.url} unreachable ({type(e).__name__})") from None

    def put_file(self, key: str, src: Path) -> None:
        with src.open("rb") as f:
            self._call("put_object", Key=self._full(key), Body=f)

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        try:
            with tmp.open("wb") as out:
                for chunk in self.open_stream(key):
                    out.write(chunk)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self._full(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.open_stream(key))

    def size(self, key: str) -> int | None:
        try:
            head = self._call("head_object", Key=self._full(key))
        except MissingObject:
            return None
        return int(head["ContentLength"])

    def list_keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        full = self._full(prefix) + "/"
        skip = len(self.prefix) + 1 if self.prefix else 0
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=full, **token)
            for obj in page.get("Contents", []):
                yield obj["Key"][skip:], int(obj["LastModified"].timestamp() * 1000)
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._full(prefix)] + [self._full(k) for k, _ in self.list_keys(prefix)]
        for i in range(0, len(keys), 1000):  # the API's batch limit
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})

    def local_path(self, key: str) -> Path | None:
        return None

    def open_stream(self, key: str) -> Iterator[bytes]:
        body = self._call("get_object", Key=self._full(key))["Body"]
        try:
            while True:
                try:
                    chunk = body.read(CHUNK)
                except self._transport_errors as e:
                    raise StorageUnavailable(f"{self.url}: read broke off ({e})") from None
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._full(key)},
                ExpiresIn=expires_s,
            )
        )

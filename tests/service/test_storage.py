"""Media storage: the same behaviour from the local directory and from a real
S3-compatible server (moto on loopback), and an unreachable S3 seen as such."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lipdub.service.storage import (
    LocalStorage,
    MissingObject,
    Storage,
    StorageUnavailable,
    open_storage,
)

from .faults import FaultProxy, S3Server


@pytest.fixture(params=["file", "s3"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server
) -> Iterator[Storage]:
    if request.param == "file":
        yield LocalStorage(tmp_path / "media", "http://127.0.0.1:9", b"k")
        return
    s3_server.apply_env()
    yield open_storage(f"s3://{s3_server.bucket()}/fleet", tmp_path, "http://127.0.0.1:9", b"k")


def test_objects_round_trip(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    storage.put_file("tasks/t1/attempts/1-a/result.mp4", src)
    storage.put_bytes("tasks/t1/attempts/1-a/session/face_001.jpg", b"jpeg")
    storage.put_bytes("tasks/t1/attempts/2-b/result.mp4", b"other")
    assert storage.size("tasks/t1/attempts/1-a/result.mp4") == 3_000_000
    assert storage.size("tasks/t1/nothing") is None
    dest = tmp_path / "out" / "r.mp4"
    storage.get_file("tasks/t1/attempts/1-a/result.mp4", dest)
    assert dest.read_bytes() == src.read_bytes()
    keys = sorted(k for k, _ in storage.list_keys("tasks/t1/attempts"))
    assert keys == [
        "tasks/t1/attempts/1-a/result.mp4",
        "tasks/t1/attempts/1-a/session/face_001.jpg",
        "tasks/t1/attempts/2-b/result.mp4",
    ]
    tree = tmp_path / "tree"
    assert storage.get_tree("tasks/t1/attempts/1-a/session", tree) == 1
    assert (tree / "face_001.jpg").read_bytes() == b"jpeg"
    storage.delete_prefix("tasks/t1/attempts/1-a")
    assert [k for k, _ in storage.list_keys("tasks/t1")] == ["tasks/t1/attempts/2-b/result.mp4"]
    with pytest.raises(MissingObject):
        storage.get_bytes("tasks/t1/attempts/1-a/result.mp4")
    with pytest.raises(ValueError):
        storage.size("../escape")


def test_s3_links_are_presigned_and_open(s3_server: S3Server, tmp_path: Path) -> None:
    s3_server.apply_env()
    st = open_storage(f"s3://{s3_server.bucket()}/p", tmp_path, "http://127.0.0.1:9", b"k")
    st.put_bytes("tasks/t/result.mp4", b"video bytes")
    url = st.presigned_url("tasks/t/result.mp4", 60)
    assert url is not None and "X-Amz-Signature" in url
    assert httpx.get(url).content == b"video bytes"


def test_unreachable_s3_is_reported_quickly(s3_server: S3Server, tmp_path: Path) -> None:
    proxy = FaultProxy("127.0.0.1", s3_server.port)
    try:
        s3_server.apply_env(f"http://127.0.0.1:{proxy.port}")
        st = open_storage(f"s3://{s3_server.bucket()}/p", tmp_path, "http://127.0.0.1:9", b"k")
        st.put_bytes("a", b"1")
        with proxy.outage("refuse"):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                st.get_bytes("a")
            assert time.monotonic() - started < 10
        assert st.get_bytes("a") == b"1"
    finally:
        s3_server.apply_env()
        proxy.close()


@pytest.mark.parametrize("links", ["proxy", "presign"])
def test_uploads_and_media_links_on_s3(s3_server: S3Server, tmp_path: Path, links: str) -> None:
    """The API on S3: an upload lands in the bucket (nothing under the data dir), and
    its signed /media link serves it, streamed or by redirect to a presigned URL."""
    from fastapi.testclient import TestClient

    from lipdub.config import Settings
    from lipdub.service.api.app import create_app

    s3_server.apply_env()
    bucket = s3_server.bucket()
    settings = Settings(
        data_dir=tmp_path / "api", storage_url=f"s3://{bucket}/m", storage_links=links,
        public_url="http://testserver", workers=0,
    )
    app = create_app(settings, run_workers=False)
    key = app.state.ctx.store.create_key("acme", 1_000_000)
    with TestClient(app) as client:
        body = b"\x00\x01 not really a video" * 1000
        r = client.post("/api/v1/files", files={"file": ("clip.mp4", body)},
                        headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        url = r.json()["data"]["url"]
        got = client.get(url.removeprefix("http://testserver"), follow_redirects=False)
        if links == "presign":
            assert got.status_code == 307
            assert httpx.get(got.headers["location"]).content == body
        else:
            assert got.status_code == 200 and got.content == body
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.startswith("m/uploads/") for k in keys), keys
    assert not (tmp_path / "api" / "media").exists()  # nothing on the API's disk


@pytest.mark.parametrize("key", ["a//b", "/etc/passwd", "../up", "a/./b", "a/../b", "a/", ""])
def test_one_key_rule_for_every_backend(storage: Storage, key: str) -> None:
    # The local directory used to accept "a//b" (it resolves to a/b) where S3 refused it:
    # a key one backend takes, the other must take too.
    with pytest.raises(ValueError):
        storage.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        storage.size(key)

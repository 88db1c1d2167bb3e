"""Safe fetching against a real local HTTP server: SSRF rules, caps, redirects, Base64."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import pytest

from lipdub.errors import LimitError
from lipdub.media.fetch import FetchError, UrlPolicy, fetch_to_file

from .helpers import MEDIA, MediaServer

LOOPBACK = UrlPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))


def fetch(src: str, tmp: Path, policy: UrlPolicy = LOOPBACK, **kw: object) -> Path:
    args: dict = {"field": "video_url", "max_bytes": 5 * 1024 * 1024, "timeout_s": 5.0}
    args.update(kw)
    return fetch_to_file(src, tmp / "out", policy, **args).path


def test_downloads_a_real_file(media_server: MediaServer, tmp_path: Path) -> None:
    p = fetch(media_server.url("videoretalking__face_2.mp4"), tmp_path)
    assert p.read_bytes() == (MEDIA / "videoretalking__face_2.mp4").read_bytes()


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "[::1]", "192.168.1.1", "0.0.0.0"]
)
def test_private_addresses_refused_by_default(host: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="private or reserved"):
        fetch(f"http://{host}/x.mp4", tmp_path, UrlPolicy())


def test_localhost_name_is_resolved_and_checked(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="private or reserved"):
        fetch("http://localhost:1/x.mp4", tmp_path, UrlPolicy())


def test_allowlist_is_exact(tmp_path: Path) -> None:
    # 127.0.0.1 is allowed in tests, 127.0.0.2 and metadata addresses are still refused.
    for host in ("127.0.0.2", "169.254.169.254", "[::ffff:10.0.0.1]"):
        with pytest.raises(FetchError, match="private or reserved"):
            fetch(f"http://{host}/x", tmp_path)


def test_redirect_to_private_address_refused(media_server: MediaServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"private or reserved address \(169\.254\.169\.254\)"):
        fetch(f"{media_server.base}/redirect?to=http://169.254.169.254/latest/meta-data", tmp_path)


def test_redirect_followed_and_limited(media_server: MediaServer, tmp_path: Path) -> None:
    target = media_server.url("videoretalking__face_5.mp4")
    assert fetch(f"{media_server.base}/redirect?to={target}", tmp_path).stat().st_size > 0
    with pytest.raises(FetchError, match="redirects more than 3 times"):
        fetch(f"{media_server.base}/loop", tmp_path, max_redirects=3)


def test_http_errors_and_caps(media_server: MediaServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(media_server.url("nope.mp4"), tmp_path)
    with pytest.raises(LimitError, match="larger than 1 MB"):
        fetch(f"{media_server.base}/bytes/999999999", tmp_path, max_bytes=1024 * 1024)
    with pytest.raises(LimitError, match="larger than 1 MB"):
        fetch(f"{media_server.base}/big", tmp_path, max_bytes=1024 * 1024)
    assert not (tmp_path / "out.part").exists()


def test_slow_download_times_out(media_server: MediaServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="took longer than 1 s|timed out"):
        fetch(f"{media_server.base}/slow", tmp_path, timeout_s=1.0)


def test_base64_and_data_uri(tmp_path: Path) -> None:
    raw = (MEDIA / "videoretalking__audio_1.wav").read_bytes()
    b64 = base64.b64encode(raw).decode()
    assert fetch(b64, tmp_path).read_bytes() == raw
    assert fetch("data:audio/wav;base64," + b64, tmp_path).read_bytes() == raw
    with pytest.raises(FetchError, match="must be Base64 encoded"):
        fetch("data:audio/wav,plain", tmp_path)
    with pytest.raises(FetchError, match="must be an http or https URL"):
        fetch("ftp://example.com/a.wav", tmp_path)
    with pytest.raises(LimitError):
        fetch(b64, tmp_path, max_bytes=1000)


def test_unresolvable_host_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="does not resolve|did not resolve within 2 s"):
        fetch("http://no-such-host.invalid/v.mp4", tmp_path, connect_timeout_s=2.0)

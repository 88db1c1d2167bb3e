"""Safe fetching of user-supplied media: http(s) URLs, ``data:`` URIs and bare Base64.

A URL from a user must not become a way into our own network (SSRF). For every hop we
resolve the host name ourselves, refuse the hop if *any* resolved address is private,
loopback, link-local (cloud metadata lives there) or otherwise non-global, and then
connect to the checked address itself, sending the original name as ``Host`` and TLS SNI.
That pins the connection: a second DNS answer (rebinding) cannot swap the address between
the check and the connect. Redirects are followed by hand so each hop is checked the same
way. Everything is size- and time-capped while streaming, never after the fact.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lipdub.errors import InputError, LimitError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECTS = {301, 302, 303, 307, 308}


class FetchError(InputError):
    """A user URL or inline payload could not be fetched; the message says why, and
    ``status`` is the HTTP status that caused it, if one did."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TimedOut(FetchError):
    """The other side did not answer (or send) in time."""


class AddressNotAllowed(FetchError):
    """The URL resolves to an address the policy refuses (retrying will not help)."""


# IPv6 prefixes whose addresses carry an IPv4 address that the traffic really goes to.
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use prefix
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")  # RFC 3056
TEREDO = ipaddress.ip_network("2001::/32")  # RFC 4380
V4_LOW32 = 0xFFFF_FFFF


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address stands for, or None if it embeds none.

    An address like ``64:ff9b::a9fe:a9fe`` (NAT64) or ``2002:a9fe:a9fe::`` (6to4) reaches
    169.254.169.254 through a translator or relay, so it must be judged as that address.
    An empty list means "embeds something we cannot judge": refuse it."""
    n = int(ip)
    low = ipaddress.IPv4Address(n & V4_LOW32)
    if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d
        return [ip.ipv4_mapped]
    if n >> 32 == 0xFFFF_0000:  # ::ffff:0:a.b.c.d (SIIT, RFC 2765)
        return [low]
    if n >> 32 == 0:  # ::a.b.c.d (deprecated IPv4-compatible; also :: and ::1)
        return [low]
    if ip in NAT64:
        return [low]
    if ip in NAT64_LOCAL:
        # A local translator may embed the IPv4 address at other offsets (/48../64
        # prefixes); only the /96 form, with the bits between zero, is unambiguous.
        return [low] if (n >> 32) & 0xFFFF_FFFF_FFFF == 0 else []
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [server, client]
    return None


@dataclass(frozen=True)
class UrlPolicy:
    """Which addresses a user URL may reach besides the public internet."""

    allow_all_private: bool = False
    allowed_networks: tuple[Network, ...] = ()

    def permits(self, ip: IPAddress) -> bool:
        if self.allow_all_private or any(ip in net for net in self.allowed_networks):
            return True
        if isinstance(ip, ipaddress.IPv6Address):
            inner = embedded_ipv4(ip)
            if inner is not None:
                # Every IPv4 address the IPv6 form carries must be allowed on its own.
                return bool(inner) and all(self.permits(v4) for v4 in inner)
        # is_global is False for private, loopback, link-local (169.254.169.254),
        # shared (100.64/10) and unspecified ranges; multicast is never media, and
        # reserved space (e.g. the rest of ::/8, which Python 3.11 calls global) neither.
        return ip.is_global and not ip.is_multicast and not ip.is_reserved


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    content_type: str


def _getaddrinfo(host: str, port: int, timeout_s: float, field: str) -> list[IPAddress]:
    """getaddrinfo with a deadline: the C resolver has none of its own that we control,
    so it runs in a daemon thread that we stop waiting for."""
    box: list[object] = []

    def run() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as e:
            box.append(e)

    th = threading.Thread(target=run, name="resolve", daemon=True)
    th.start()
    th.join(timeout_s)
    if not box:
        raise FetchError(
            f"{field} host {host!r} did not resolve within {timeout_s:g} s: check the host name."
        )
    res = box[0]
    if isinstance(res, BaseException):
        raise FetchError(f"{field} host {host!r} does not resolve: check the URL's host name.")
    infos: list[Any] = res  # type: ignore[assignment]
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def resolve_checked(
    host: str, port: int, policy: UrlPolicy, field: str, timeout_s: float = 10.0
) -> IPAddress:
    """Resolve ``host`` and return one address, refusing if any answer is not permitted."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addrs: list[IPAddress] = [literal]
    else:
        addrs = _getaddrinfo(host, port, timeout_s, field)
        if not addrs:
            raise FetchError(f"{field} host {host!r} has no address: check the URL.")
    for ip in addrs:
        if not policy.permits(ip):
            raise AddressNotAllowed(
                f"{field} points to a private or reserved address ({ip}): use a public "
                "http(s) URL, or let the server reach it with LIPDUB_ALLOW_PRIVATE_URLS "
                "(e.g. 127.0.0.1/32 for this machine)."
            )
    return addrs[0]


def _pinned_request(
    client: httpx.Client,
    method: str,
    url: httpx.URL,
    policy: UrlPolicy,
    field: str,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    resolve_timeout_s: float = 10.0,
) -> httpx.Request:
    if url.scheme not in ("http", "https"):
        raise FetchError(f"{field} must be an http or https URL, not {url.scheme!r}.")
    if not url.host:
        raise FetchError(f"{field} has no host: give a full http(s) URL.")
    port = url.port or (443 if url.scheme == "https" else 80)
    ip = resolve_checked(url.host, port, policy, field, resolve_timeout_s)
    host_header = url.netloc.decode("ascii").rsplit("@", 1)[-1]
    pinned = url.copy_with(host=str(ip))
    hdrs = {"Host": host_header, **(headers or {})}
    # sni_hostname keeps TLS certificate checks against the real name, not the IP.
    ext = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return client.build_request(method, pinned, headers=hdrs, content=content, extensions=ext)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Built once: creating a context loads the CA bundle (tens of ms), which would
    # dominate short callback attempts. It is never modified after creation.
    return ssl.create_default_context()


@contextmanager
def open_url(
    url: str,
    policy: UrlPolicy,
    *,
    field: str,
    timeout_s: float,
    connect_timeout_s: float = 10.0,
    max_redirects: int = 5,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    read_timeout_s: float | None = None,
) -> Iterator[httpx.Response]:
    """Open ``url`` with every hop checked and pinned; yields the streaming final response.

    ``read_timeout_s`` bounds each wait for bytes (default ``timeout_s``). With
    ``max_redirects`` 0 a redirect is refused as such, naming its status."""
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError(f"{field} is not a valid URL: give a full http(s) URL.") from None
    timeout = httpx.Timeout(
        timeout_s,
        connect=min(connect_timeout_s, timeout_s),
        read=min(read_timeout_s or timeout_s, timeout_s),
    )
    # trust_env=False: a proxy from the environment would defeat the address pinning.
    with httpx.Client(
        timeout=timeout, trust_env=False, follow_redirects=False, verify=_tls_context()
    ) as client:
        for _hop in range(max_redirects + 1):
            req = _pinned_request(
                client, method, current, policy, field, headers, content, connect_timeout_s
            )
            try:
                resp = client.send(req, stream=True)
            except httpx.TimeoutException:
                raise TimedOut(f"{field} timed out: use a faster or smaller source.") from None
            except httpx.HTTPError as e:
                raise FetchError(
                    f"{field} could not be fetched ({type(e).__name__}): check the URL."
                ) from None
            if resp.status_code in REDIRECTS and "location" in resp.headers:
                resp.close()
                if max_redirects == 0:
                    raise FetchError(
                        f"{field} answered HTTP {resp.status_code}, a redirect, and redirects "
                        "are not followed: give the final URL.",
                        status=resp.status_code,
                    )
                try:
                    current = current.join(resp.headers["location"])
                except (httpx.InvalidURL, ValueError):
                    raise FetchError(f"{field} redirects to an invalid URL.") from None
                if resp.status_code == 303:
                    method, content = "GET", None
                continue
            try:
                yield resp
            finally:
                resp.close()
            return
    raise FetchError(f"{field} redirects more than {max_redirects} times: give the final URL.")


def fetch_to_file(
    source: str,
    dest: Path,
    policy: UrlPolicy,
    *,
    field: str,
    max_bytes: int,
    timeout_s: float = 60.0,
    connect_timeout_s: float = 10.0,
    max_redirects: int = 5,
    min_bytes_per_s: int = 0,
    rate_window_s: float = 5.0,
) -> FetchResult:
    """Write the media named by ``source`` (URL, data: URI or Base64) to ``dest``.

    A download slower than ``min_bytes_per_s`` over any ``rate_window_s`` window is cut
    at the end of that window: a trickling source must not hold a download slot (and a
    thread) until the overall ``timeout_s``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    s = source.strip()
    low = s[:8].lower()
    if low.startswith(("http://", "https://")):
        rate = _MinRate(field, min_bytes_per_s, rate_window_s)
        return _download(
            s, dest, policy, field, max_bytes, timeout_s, connect_timeout_s, max_redirects, rate
        )
    if low.startswith("data:"):
        header, sep, payload = s.partition(",")
        if not sep or ";base64" not in header.lower():
            raise FetchError(f"{field} data: URI must be Base64 encoded (data:<type>;base64,...).")
        ctype = header[5:].split(";")[0] or "application/octet-stream"
        return _write_base64(payload, dest, field, max_bytes, ctype)
    if "://" in s[:12]:
        raise FetchError(f"{field} must be an http or https URL, a data: URI or Base64.")
    return _write_base64(s, dest, field, max_bytes, "application/octet-stream")


def _write_base64(payload: str, dest: Path, field: str, max_bytes: int, ctype: str) -> FetchResult:
    compact = "".join(payload.split())
    if len(compact) * 3 // 4 > max_bytes + 3:
        raise LimitError(
            f"{field} is larger than {max_bytes // (1024 * 1024)} MB: send a smaller file."
        )
    # Accept both alphabets (standard and URL-safe), but nothing else: a lenient decoder
    # would turn any text into bytes and blame the media format instead of the encoding.
    std = compact.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        data = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise FetchError(
            f"{field} is neither an http(s) URL nor valid Base64: check the value."
        ) from None
    if not data:
        raise FetchError(f"{field} is empty: send the media file's bytes.")
    if len(data) > max_bytes:
        raise LimitError(
            f"{field} is larger than {max_bytes // (1024 * 1024)} MB: send a smaller file."
        )
    dest.write_bytes(data)
    return FetchResult(dest, len(data), ctype)


def _download(
    url: str,
    dest: Path,
    policy: UrlPolicy,
    field: str,
    max_bytes: int,
    timeout_s: float,
    connect_timeout_s: float,
    max_redirects: int,
    rate: _MinRate,
) -> FetchResult:
    deadline = time.monotonic() + timeout_s
    too_big = f"{field} is larger than {max_bytes // (1024 * 1024)} MB: send a smaller file."
    with open_url(
        url,
        policy,
        field=field,
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
        max_redirects=max_redirects,
        # Silence for a whole window is the slowest trickle of all.
        read_timeout_s=rate.window_s if rate.min_bytes_per_s else None,
    ) as resp:
        if resp.status_code >= 400:
            raise FetchError(
                f"{field} answered HTTP {resp.status_code}: check that the URL is public "
                "and points to the file."
            )
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise LimitError(too_big)
        size = 0
        rate.start()
        tmp = dest.with_name(dest.name + ".part")
        try:
            with tmp.open("wb") as out:
                for chunk in resp.iter_bytes():  # as received, so the deadline is checked often
                    size += len(chunk)
                    if size > max_bytes:
                        raise LimitError(too_big)
                    if time.monotonic() > deadline:
                        raise FetchError(
                            f"{field} took longer than {timeout_s:.0f} s to download: "
                            "use a faster or smaller source."
                        )
                    rate.received(len(chunk))
                    out.write(chunk)
        except httpx.TimeoutException:
            tmp.unlink(missing_ok=True)
            if rate.min_bytes_per_s:
                raise rate.too_slow() from None
            raise FetchError(f"{field} timed out: use a faster or smaller source.") from None
        except httpx.HTTPError:
            tmp.unlink(missing_ok=True)
            raise FetchError(f"{field} download broke off: check the URL and retry.") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if size == 0:
            tmp.unlink(missing_ok=True)
            raise FetchError(f"{field} is empty: the URL returned no bytes.")
        tmp.replace(dest)
        return FetchResult(dest, size, resp.headers.get("content-type", ""))


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL (credentials dropped): one callback destination."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}".lower()[:300]


class _MinRate:
    """Cuts a download whose bytes in a window of ``window_s`` fall short of the rate."""

    def __init__(self, field: str, min_bytes_per_s: int, window_s: float) -> None:
        self.field = field
        self.min_bytes_per_s = min_bytes_per_s
        self.window_s = window_s
        self._window_start = 0.0
        self._window_bytes = 0

    def start(self) -> None:
        self._window_start = time.monotonic()
        self._window_bytes = 0

    def received(self, n: int) -> None:
        if not self.min_bytes_per_s:
            return
        self._window_bytes += n
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            if self._window_bytes < self.min_bytes_per_s * (now - self._window_start):
                raise self.too_slow()
            self._window_start, self._window_bytes = now, 0

    def too_slow(self) -> FetchError:
        return FetchError(
            f"{self.field} sent less than {self.min_bytes_per_s / 1024:g} KB/s for "
            f"{self.window_s:g} s and was cut off: use a faster source, or upload the file."
        )


def url_file_name(url: str, default: str) -> str:
    """A safe file name suffix hint taken from a URL path (for probing by extension)."""
    path = urllib.parse.urlsplit(url).path
    name = path.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return f"{default}.{ext}" if ext.isalnum() and len(ext) <= 5 else default

"""UrlPolicy.permits, table-driven: every IPv6 form that embeds an IPv4 address is judged
by the IPv4 address it carries (issue 8, case 5)."""

from __future__ import annotations

import ipaddress

import pytest

from lipdub.media.fetch import UrlPolicy

DEFAULT = UrlPolicy()
LOOPBACK_ALLOWED = UrlPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))

# (address, permitted by the default policy, what it is)
TABLE = [
    # Plain IPv4.
    ("8.8.8.8", True, "public IPv4"),
    ("127.0.0.1", False, "loopback"),
    ("10.0.0.1", False, "private"),
    ("169.254.169.254", False, "link-local metadata"),
    ("100.64.0.1", False, "shared address space"),
    ("0.0.0.0", False, "unspecified"),
    ("224.0.0.1", False, "multicast"),
    ("240.0.0.1", False, "reserved"),
    # Plain IPv6.
    ("2001:4860:4860::8888", True, "public IPv6"),
    ("::1", False, "IPv6 loopback"),
    ("::", False, "IPv6 unspecified"),
    ("fe80::1", False, "IPv6 link-local"),
    ("fc00::1", False, "unique local"),
    ("ff02::1", False, "IPv6 multicast"),
    # IPv4-mapped ::ffff:a.b.c.d.
    ("::ffff:8.8.8.8", True, "mapped public"),
    ("::ffff:127.0.0.1", False, "mapped loopback"),
    ("::ffff:a9fe:a9fe", False, "mapped metadata"),
    # IPv4-translated ::ffff:0:a.b.c.d (SIIT).
    ("::ffff:0:808:808", True, "translated public"),
    ("::ffff:0:a9fe:a9fe", False, "translated metadata"),
    ("::ffff:0:7f00:1", False, "translated loopback"),
    # IPv4-compatible ::a.b.c.d.
    ("::8.8.8.8", True, "compatible public"),
    ("::127.0.0.1", False, "compatible loopback"),
    ("::a9fe:a9fe", False, "compatible metadata"),
    # NAT64 well-known prefix 64:ff9b::/96.
    ("64:ff9b::808:808", True, "NAT64 public"),
    ("64:ff9b::a9fe:a9fe", False, "NAT64 metadata"),
    ("64:ff9b::7f00:1", False, "NAT64 loopback"),
    ("64:ff9b::a00:1", False, "NAT64 private"),
    # NAT64 local-use prefix 64:ff9b:1::/48.
    ("64:ff9b:1::808:808", True, "local NAT64 /96 public"),
    ("64:ff9b:1::a9fe:a9fe", False, "local NAT64 /96 metadata"),
    ("64:ff9b:1:7f00:1::808:808", False, "local NAT64, IPv4 at another offset"),
    # 6to4 2002::/16.
    ("2002:808:808::1", True, "6to4 public"),
    ("2002:a9fe:a9fe::", False, "6to4 metadata"),
    ("2002:7f00:1::1", False, "6to4 loopback"),
    ("2002:c0a8:101::1", False, "6to4 private"),
    # Teredo 2001::/32: server address, then the client address inverted.
    ("2001:0:808:808::f7f7:f7f7", True, "Teredo public server and client"),
    ("2001:0:a9fe:a9fe::f7f7:f7f7", False, "Teredo metadata server"),
    ("2001:0:808:808::80ff:fffe", False, "Teredo loopback client (127.0.0.1 inverted)"),
]


@pytest.mark.parametrize(("address", "permitted", "what"), TABLE, ids=[t[2] for t in TABLE])
def test_default_policy(address: str, permitted: bool, what: str) -> None:
    assert DEFAULT.permits(ipaddress.ip_address(address)) is permitted, what


@pytest.mark.parametrize(
    ("address", "permitted"),
    [
        ("127.0.0.1", True),
        ("::ffff:127.0.0.1", True),
        ("::127.0.0.1", True),
        ("64:ff9b::7f00:1", True),
        ("2002:7f00:1::", True),
        ("127.0.0.2", False),
        ("::ffff:127.0.0.2", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("::1", False),
    ],
)
def test_allowlist_applies_to_the_embedded_address(address: str, permitted: bool) -> None:
    assert LOOPBACK_ALLOWED.permits(ipaddress.ip_address(address)) is permitted


def test_allow_all_permits_everything() -> None:
    policy = UrlPolicy(allow_all_private=True)
    assert policy.permits(ipaddress.ip_address("64:ff9b::a9fe:a9fe"))
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))

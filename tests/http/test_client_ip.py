"""The proxy-aware client IP: who the client is for each ``X-Forwarded-For`` a peer may send.

A chain from a trusted proxy that cannot be parsed makes the client *unknown* (``None``), never
the proxy itself: the proxy's address is trusted by allow-lists (loopback ``/metrics``, an
admin list holding the proxy's network), so falling back to it failed open.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authkeep.http.client_ip import ClientIPResolver

PROXY = "10.0.0.2"
INNER_PROXY = "10.0.0.3"
RESOLVER = ClientIPResolver([PROXY, INNER_PROXY])
UNTRUSTED = ClientIPResolver([])


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        # Absent header: the proxy speaks for itself (a health check, a local scraper).
        ([], PROXY),
        (["198.51.100.7"], "198.51.100.7"),
        (["  198.51.100.7\t"], "198.51.100.7"),
        (["198.51.100.7:5678"], "198.51.100.7"),
        (["[2001:db8::7]:443"], "2001:db8::7"),
        (["[2001:db8::7]"], "2001:db8::7"),
        (["2001:db8::7"], "2001:db8::7"),
        # IPv4-mapped IPv6 is the IPv4 address: one client, one bucket, one allow-list entry.
        (["::ffff:198.51.100.7"], "198.51.100.7"),
        (["[::ffff:198.51.100.7]:80"], "198.51.100.7"),
        # Right-most untrusted hop; whatever the client wrote to its left is ignored.
        (["garbage, 198.51.100.7"], "198.51.100.7"),
        (["127.0.0.1, 198.51.100.7, 10.0.0.3"], "198.51.100.7"),
        # Several headers are one list, in order (RFC 9110 §5.3).
        (["garbage", "198.51.100.7"], "198.51.100.7"),
        (["198.51.100.7", "10.0.0.3"], "198.51.100.7"),
        # A trusted proxy mapped by a dual-stack socket is still trusted.
        (["198.51.100.7, ::ffff:10.0.0.3"], "198.51.100.7"),
        # Only trusted proxies in the chain: the left-most speaks for itself.
        (["10.0.0.3"], INNER_PROXY),
    ],
)
def test_a_parsable_chain_names_the_right_most_untrusted_hop(
    headers: list[str], client: str
) -> None:
    assert RESOLVER.resolve(PROXY, headers) == client


@pytest.mark.parametrize(
    "headers",
    [
        ["garbage"],
        [""],
        [" "],
        [","],
        ["198.51.100.7,"],  # an empty hop written by the proxy
        ["198.51.100.7, , 10.0.0.3"],
        ["unknown"],  # what some proxies write when they do not know
        ["_hidden"],  # an RFC 7239 obfuscated identifier
        ["198.51.100.7:http"],
        ["198.51.100.7:123456"],
        ["[2001:db8::7]junk"],
        ["[2001:db8::7"],
        ["01.02.03.04"],  # leading zeros: octal to some parsers, so refused by all
        ['"198.51.100.7"'],  # Forwarded-header quoting does not belong here
        ["198.51.100.7", ""],  # the last header (the proxy's) is empty
        ["198.51.100.7, garbage, 10.0.0.3"],
    ],
)
def test_an_unparsable_chain_from_a_trusted_proxy_is_an_unknown_client(
    headers: list[str],
) -> None:
    assert RESOLVER.resolve(PROXY, headers) is None
    # From a peer that is not a proxy, the header means nothing at all.
    assert RESOLVER.resolve("203.0.113.9", headers) == "203.0.113.9"
    assert UNTRUSTED.resolve(PROXY, headers) == PROXY


def test_the_scope_of_a_trusted_proxy_with_garbage_is_an_unknown_client() -> None:
    scope = {
        "type": "http",
        "client": (PROXY, 443),
        "headers": [(b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-for", b"garbage")],
    }
    assert RESOLVER.from_scope(scope) is None
    scope["headers"] = [(b"x-forwarded-for", b"garbage"), (b"x-forwarded-for", b"198.51.100.7")]
    assert RESOLVER.from_scope(scope) == "198.51.100.7"


def _unmapped(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip


def _not_an_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip(" \t"))
    except ValueError:
        return "," not in text and ":" not in text and "[" not in text
    return False


@settings(max_examples=300, deadline=None)
@given(
    written_by_client=st.text(max_size=40),
    client=st.ip_addresses().filter(lambda ip: not RESOLVER.is_trusted(_unmapped(ip))),
)
def test_whatever_a_client_writes_the_proxy_appended_address_wins(
    written_by_client: str, client: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> None:
    resolved = RESOLVER.resolve(PROXY, [f"{written_by_client}, {client}"])
    assert resolved == str(_unmapped(client))


@settings(max_examples=300, deadline=None)
@given(garbage=st.text(max_size=40).filter(_not_an_address))
def test_garbage_from_the_proxy_never_resolves_to_the_proxy(garbage: str) -> None:
    assert RESOLVER.resolve(PROXY, [garbage]) is None
    assert RESOLVER.resolve(PROXY, [f"198.51.100.7, {garbage}"]) is None

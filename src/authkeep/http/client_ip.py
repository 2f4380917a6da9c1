"""The client's IP address, proxy-aware without being spoofable.

The socket peer is the client unless the peer is one of ``AUTHKEEP_TRUSTED_PROXIES``. Only
then is ``X-Forwarded-For`` read, from the right: each trusted proxy appends the address it
saw, so the right-most address that is *not* a trusted proxy is the real client. Anything to
its left was written by the client itself and is ignored — a client cannot spoof its way out
of a rate limit or into an allow-list.

The chain fails closed: a hop in the trusted part of the chain that is not an address (empty,
``unknown``, an RFC 7239 obfuscated ``_name``, a bad port, garbage) makes the client
*unknown* (``None``), never the proxy's own address. Falling back to the proxy let a broken
or bypassed proxy hand every client the proxy's identity, which the loopback ``/metrics``
allow-list and an admin allow-list trust. An unknown client is refused by every allow-list and
spends one shared rate-limit bucket (:data:`UNKNOWN_CLIENT`). Several ``X-Forwarded-For``
headers are one list, in order (RFC 9110 §5.3); an IPv4-mapped IPv6 address is its IPv4
address, and an IPv6 zone id (``fe80::1%eth0``) is dropped, on every path. A trusted peer
that sends no ``X-Forwarded-For`` at all speaks for itself (a health check or a scraper on
the proxy host).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

import structlog
from starlette.types import Scope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN_CLIENT = "unknown"
"""What rate limits count a client without a known address as: one shared bucket, so garbage
in a forwarded chain cannot mint a fresh bucket per request."""

log = structlog.get_logger("authkeep.http")
_PORT = re.compile(r"[0-9]{1,5}")


def _parse(value: str) -> IPAddress | None:
    value = value.strip(" \t")
    if value.startswith("["):  # [v6] or [v6]:port
        value, closed, rest = value[1:].partition("]")
        if not closed or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]))):
            return None
    elif value.count(":") == 1:  # v4:port
        value, _, port = value.partition(":")
        if not _PORT.fullmatch(port):
            return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # The zone (fe80::1%eth0) names an interface of the host that wrote it: meaningless
        # here, unbounded in length (a 60-character zone overflowed the 45-character IP
        # columns: a 500), and a free suffix that would mint a new rate-limit key per value.
        address = ipaddress.IPv6Address(int(address))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 from a dual-stack socket is 192.0.2.1
    return address


class ClientIPResolver:
    """Resolve client addresses given the trusted proxy networks."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(item, strict=False) for item in trusted_proxies
        )

    def is_trusted(self, address: IPAddress) -> bool:
        """Whether ``address`` belongs to a trusted proxy."""
        return any(address in network for network in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> str | None:
        """The client address for a connection from ``peer`` with these XFF header values;
        None when it is unknown (no peer, or an unparsable chain from a trusted proxy)."""
        peer_ip = _parse(peer) if peer else None
        if peer_ip is None:
            return peer
        if not self._trusted or not self.is_trusted(peer_ip):
            return str(peer_ip)
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            hop_ip = _parse(hop)
            if hop_ip is None:
                # A trusted proxy wrote this hop (everything right of it is trusted), so the
                # client is unknown. Answering with the proxy's own address instead would let
                # any client behind it into allow-lists that trust the proxy (fail open).
                log.warning("forwarded_for_unparsable", peer=str(peer_ip), hops=len(hops))
                return None
            if not self.is_trusted(hop_ip):
                return str(hop_ip)
            peer_ip = hop_ip
        return str(peer_ip)

    def from_scope(self, scope: Scope) -> str | None:
        """The client address of an ASGI connection."""
        client = scope.get("client")
        peer = client[0] if client else None
        if not self._trusted:
            return self.resolve(peer)
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name == b"x-forwarded-for"
        ]
        return self.resolve(peer, forwarded)

"""The client's IP address, proxy-aware without being spoofable.

The socket peer is the client unless the peer is one of ``AUTHKEEP_TRUSTED_PROXIES``. Only
then is ``X-Forwarded-For`` read, from the right: each trusted proxy appends the address it
saw, so the right-most address that is *not* a trusted proxy is the real client. Anything to
its left was written by the client itself and is ignored — a client cannot spoof its way out
of a rate limit or into an allow-list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(value: str) -> IPAddress | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


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
        """The client address for a connection from ``peer`` with these XFF header values."""
        peer_ip = _parse(peer) if peer else None
        if peer_ip is None:
            return peer
        if not self._trusted or not self.is_trusted(peer_ip):
            return str(peer_ip)
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            hop_ip = _parse(hop)
            if hop_ip is None:
                # Garbage from a client: stop here and use the last address we trust.
                break
            if not self.is_trusted(hop_ip):
                return str(hop_ip)
            peer_ip = hop_ip
        return str(peer_ip)

    def from_scope(self, scope: Scope) -> str | None:
        """The client address of an ASGI connection."""
        client = scope.get("client")
        peer = client[0] if client else None
        if not self._trusted:
            return peer
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name == b"x-forwarded-for"
        ]
        return self.resolve(peer, forwarded)

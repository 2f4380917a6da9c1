"""IP allow-lists for restricted routes (``/metrics``; admin routes may reuse it).

Checked against the proxy-aware client IP that :class:`~authkeep.http.client_ip.
ClientIPResolver` put in ``scope["state"]["client_ip"]``, never against ``X-Forwarded-For``
directly: a client could write any address there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from authkeep.http.client_ip import IPNetwork


class IPAllowList:
    """Addresses and networks allowed in; an empty list allows nobody."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in entries
        )

    def allows(self, address: str | None) -> bool:
        """Whether ``address`` (None when unknown) is allowed."""
        if not address or not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 on a dual-stack socket
        return any(ip in network for network in self._networks)

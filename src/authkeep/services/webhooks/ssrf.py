"""Where webhooks may go: no server-side request forgery through an endpoint URL.

An endpoint URL is chosen by an organization admin, and authkeep posts to it from inside
the deployment's network. Without a rule, ``http://169.254.169.254/…`` (the cloud metadata
service: credentials), ``http://localhost:6379`` (Redis) or ``http://10.0.0.5/admin``
would have authkeep reach what only it can reach. The rules:

* the URL is ``https`` in production (``http`` elsewhere too), without credentials, with a
  host name or address;
* every address the host resolves to must be public: not loopback, private (RFC 1918,
  RFC 4193 ULA), link-local (``169.254.0.0/16`` — the metadata service — and ``fe80::/10``),
  unspecified, multicast, reserved, shared (CGNAT) or documentation space — checked after
  unwrapping IPv4 inside IPv6 (``::ffff:127.0.0.1``, NAT64, 6to4, Teredo). One forbidden
  address refuses the host: a name that resolves to a public and a private address could
  be answered with either;
* the check runs at registration **and at every connection**, on the addresses actually
  connected to (:class:`~authkeep.services.webhooks.transport.GuardedTransport`): a name
  whose DNS answer changes after registration (DNS rebinding) is refused then;
* ``AUTHKEEP_WEBHOOK_ALLOWED_NETWORKS`` (CIDRs) lets chosen networks through — local
  development and tests post to ``127.0.0.1``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
MAX_URL_LENGTH = 2048


class AddressRefused(Exception):
    """The URL, or an address its host resolves to, is not allowed. The message is safe to
    show and store: it names the rule, not the address."""


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is a public unicast address (see the module docstring)."""
    inner = embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        return False
    if address.is_link_local or address.is_private or address.is_reserved:
        return False
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return False
    # is_global is False for everything IANA lists as not globally reachable (documentation
    # ranges, benchmarking, ...), which the checks above do not all name.
    return address.is_global or inner is not None


Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Host and port → the addresses it resolves to (text)."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's resolver (``getaddrinfo``), TCP addresses only."""
    loop = asyncio.get_running_loop()
    answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(sockaddr[0]) for family, *_, sockaddr in answers if family in _INET_FAMILIES]


_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The rules for one deployment: ``https_only`` (production) and the allowed networks.
    ``resolver`` replaces the system's (tests: a name whose answer changes)."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    https_only: bool = True
    resolver: Resolver = system_resolver

    @classmethod
    def build(
        cls, allowed: Iterable[str], *, https_only: bool, resolver: Resolver = system_resolver
    ) -> AddressPolicy:
        """A policy from CIDR strings (``AUTHKEEP_WEBHOOK_ALLOWED_NETWORKS``)."""
        networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in allowed)
        return cls(networks, https_only, resolver)

    def allows(self, address: IPAddress) -> bool:
        """Whether a connection to ``address`` is allowed."""
        if any(address in network for network in self.allowed_networks):
            return True
        inner = embedded_ipv4(address)
        if inner is not None and any(inner in network for network in self.allowed_networks):
            return True
        return is_public(address)

    def check_url(self, url: str) -> SplitResult:
        """The parsed ``url``, or AddressRefused for a URL no delivery may use."""
        if len(url) > MAX_URL_LENGTH:
            raise AddressRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise AddressRefused("the URL cannot be parsed") from None
        allowed = ("https",) if self.https_only else ("https", "http")
        if parts.scheme not in allowed:
            raise AddressRefused(
                "the URL must use https" if self.https_only else "the URL must use http(s)"
            )
        if not parts.hostname:
            raise AddressRefused("the URL has no host")
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL would be stored and shown with it.
            raise AddressRefused("the URL must not carry a user name or password")
        if parts.fragment:
            raise AddressRefused("the URL must not have a fragment")
        if port == 0:
            raise AddressRefused("the URL's port is not valid")
        return parts

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to, all of them allowed; else AddressRefused."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                answers = await self.resolver(host, port)
            except (OSError, UnicodeError):
                raise AddressRefused("the host name does not resolve") from None
            addresses = []
            for answer in answers:
                # An IPv6 scope ("fe80::1%eth0") is not part of the address.
                found = ipaddress.ip_address(answer.split("%", 1)[0])
                if found not in addresses:
                    addresses.append(found)
            if not addresses:
                raise AddressRefused("the host name does not resolve")
        if not all(self.allows(address) for address in addresses):
            raise AddressRefused(
                "the host resolves to a loopback, private, link-local or otherwise "
                "non-public address (AUTHKEEP_WEBHOOK_ALLOWED_NETWORKS can allow a network)"
            )
        return addresses

    async def check(self, url: str) -> list[IPAddress]:
        """:meth:`check_url` and :meth:`resolve` for the URL's host: its allowed addresses."""
        parts = self.check_url(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return await self.resolve(parts.hostname or "", port)


def host_of(url: str) -> str | None:
    """The host of ``url`` (None when it cannot be parsed): what the audit log and the
    logs keep of an endpoint URL, whose path or query may hold a token."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None

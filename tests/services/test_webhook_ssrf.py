"""No SSRF through a webhook URL: what registration refuses, what the delivery client
refuses to connect to (after DNS resolution, every time), and what the allow-list opens."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from authkeep.services.webhooks import AddressPolicy, AddressRefused
from authkeep.services.webhooks.ssrf import is_public
from authkeep.services.webhooks.transport import guarded_client
from webhook_helpers import Receiver

NOT_PUBLIC = [
    "127.0.0.1",  # loopback
    "127.8.9.10",
    "::1",
    "10.0.0.1",  # RFC 1918
    "10.255.255.254",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: the cloud metadata service
    "fe80::1",
    "fd00::1",  # ULA
    "0.0.0.0",  # noqa: S104  (unspecified: here as data)
    "::",
    "224.0.0.1",  # multicast
    "ff02::1",
    "100.64.0.1",  # shared address space (CGNAT)
    "192.0.2.10",  # documentation
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "::ffff:127.0.0.1",  # IPv4-mapped IPv6
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo of 127.0.0.1
]
PUBLIC = ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "8.8.8.8"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    assert not AddressPolicy().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "http://10.0.0.5/admin",
        "http://10.200.1.1:8080/",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://localhost:6379/",  # a name that resolves to loopback
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv6-mapped IPv4
        "http://[::ffff:a9fe:a9fe]/",  # 169.254.169.254, mapped, in hex
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://127.1/",  # 127.0.0.1, short form
        "http://0x7f.0.0.1/",
    ],
)
async def test_registration_refuses_addresses_that_are_not_public(url: str) -> None:
    with pytest.raises(AddressRefused):
        await AddressPolicy(https_only=False).check(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.216.34/", "http"),
        ("file:///etc/passwd", "http"),
        ("gopher://93.184.216.34/", "http"),
        ("http://user:pw@93.184.216.34/", "user name"),
        ("http://93.184.216.34/#frag", "fragment"),
        ("http:///path", "no host"),
        ("http://93.184.216.34:99999/", "parsed"),
        ("http://" + "a" * 2050 + ".com/", "longer"),
        ("http://does-not-exist.invalid/", "resolve"),
    ],
)
async def test_malformed_or_unresolvable_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(AddressRefused, match=reason):
        await AddressPolicy(https_only=False).check(url)


async def test_production_needs_https() -> None:
    with pytest.raises(AddressRefused, match="https"):
        await AddressPolicy(https_only=True).check("http://93.184.216.34/hooks")
    assert await AddressPolicy(https_only=True).check("https://93.184.216.34/hooks")


async def test_the_allow_list_lets_chosen_networks_through() -> None:
    policy = AddressPolicy.build(["127.0.0.0/8", "10.1.0.0/16"], https_only=False)
    for url in (
        "http://127.0.0.1:8080/",
        "http://localhost:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.1.2.3/",
    ):
        assert await policy.check(url), url
    # Only those: another private network, the metadata service, ::1 stay refused.
    for url in ("http://10.2.0.1/", "http://169.254.169.254/", "http://[::1]/"):
        with pytest.raises(AddressRefused):
            await policy.check(url)


async def test_a_name_with_one_private_answer_among_public_ones_is_refused() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(AddressRefused):
        await AddressPolicy(https_only=False, resolver=mixed).check("http://mixed.example/")


async def test_the_delivery_client_refuses_to_connect_to_loopback() -> None:
    with Receiver() as receiver:
        async with guarded_client(AddressPolicy(https_only=False), timeout=2.0) as client:
            for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
                with pytest.raises(AddressRefused):
                    await client.post(url, content=b"{}")
        # Refused before any connection: the receiver saw nothing.
        assert receiver.requests() == []
        allowed = AddressPolicy.build(["127.0.0.0/8"], https_only=False)
        async with guarded_client(allowed, timeout=2.0) as client:
            response = await client.post(receiver.url, content=b"{}")
        assert response.status_code == 200
        assert len(receiver.requests()) == 1


def test_the_delivery_client_follows_no_redirect_and_no_proxy() -> None:
    client = guarded_client(AddressPolicy(), timeout=1.0)
    assert client.follow_redirects is False
    # trust_env=False: HTTP_PROXY/HTTPS_PROXY from the environment cannot reroute it.
    assert client.trust_env is False
    assert isinstance(client, httpx.AsyncClient)

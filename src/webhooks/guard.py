"""Where webhooks may go: every destination is resolved and each of its addresses checked.

A webhook URL is user input pointing our servers at the network, so every destination is
resolved and each of its addresses checked (`validate_url`) before anything is sent. The check
is repeated where the connection is made: `GuardedTransport` (`src.webhooks.transport`) resolves
the host itself, checks every address and connects only to one it checked, so a DNS answer that
changes between the check and the connection (DNS rebinding) cannot steer a request to an
internal address. Every lookup goes through `resolve_host` (the other modules call it as
`guard.resolve_host`, so one resolver serves every check).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from src.webhooks.config import NotificationSettings
from src.webhooks.exceptions import AddressRefused, HostUnresolvable, InvalidWebhookUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


def _table(*entries: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in entries)


# IANA's IPv4 special-purpose address registry (every entry, globally reachable or not: none is
# a webhook receiver), multicast and the rest of 240/4. The first match names the reason.
_SPECIAL_IPV4 = _table(
    ("0.0.0.0/32", "an unspecified address"),
    ("0.0.0.0/8", "a 'this network' address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "an IETF protocol assignment address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.31.196.0/24", "an AS112 address"),
    ("192.52.193.0/24", "an AMT address"),
    ("192.88.99.0/24", "a 6to4 relay anycast address"),
    ("192.168.0.0/16", "a private address"),
    ("192.175.48.0/24", "an AS112 address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
)
# IANA's IPv6 special-purpose registry within 2000::/3 and below it; everything else outside
# global unicast 2000::/3 is refused as reserved. IPv4-mapped, Teredo (2001::/32), 6to4
# (2002::/16) and NAT64 (64:ff9b::/96) are judged by the IPv4 address inside first.
_SPECIAL_IPV6 = _table(
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a local-use IPv4/IPv6 translation address"),
    ("100::/64", "a discard-only address"),
    ("100:0:0:1::/64", "a dummy address"),
    ("2001::/23", "an IETF protocol assignment address"),
    ("2001:db8::/32", "a documentation address"),
    ("2620:4f:8000::/48", "an AS112 address"),
    ("3fff::/20", "a documentation address"),
    ("5f00::/16", "a segment routing (SRv6) address"),
    ("fc00::/7", "a private address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to for TCP (an IP literal is its own only address)."""
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError):
        raise HostUnresolvable(host) from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise HostUnresolvable(host)
    return addresses


def address_refusal(address: IPAddress) -> str | None:
    """Why webhooks may not reach `address` (e.g. "a private address"), or None if public.

    The verdict comes from explicit tables (IANA's special-purpose registries, multicast, and
    IPv6 outside global unicast 2000::/3), not from `ipaddress.is_global` alone, whose answer
    differs between Python versions (3.11 calls 192.0.0.0/24 global, for one); `is_global` is
    only a last net for ranges the tables miss.
    """
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        return _ipv6_refusal(address)
    return _table_refusal(address, _SPECIAL_IPV4) or _not_global(address)


def _ipv6_refusal(address: ipaddress.IPv6Address) -> str | None:
    if address.ipv4_mapped is not None:
        # Never a real destination's DNS answer; connecting to one reaches its IPv4 address.
        inner = address_refusal(address.ipv4_mapped)
        if inner is not None:
            return f"{inner} (embedding {address.ipv4_mapped})"
        return "an IPv4-mapped address"
    if address.teredo is not None:
        server, client = address.teredo
        for inner_address in (client, server):
            inner = address_refusal(inner_address)
            if inner is not None:
                return f"{inner} (embedding {inner_address})"
        return "a Teredo address"
    embedded = _embedded_ipv4(address)  # 6to4 or NAT64: public when the IPv4 inside is
    if embedded is not None:
        inner = address_refusal(embedded)
        return None if inner is None else f"{inner} (embedding {embedded})"
    reason = _table_refusal(address, _SPECIAL_IPV6)
    if reason is not None:
        return reason
    if address not in _GLOBAL_UNICAST:
        return "a reserved address"
    return _not_global(address)


def _table_refusal(address: IPAddress, table: tuple[tuple[IPNetwork, str], ...]) -> str | None:
    for network, reason in table:
        if address in network:
            return reason
    return None


def _not_global(address: IPAddress) -> str | None:
    return None if address.is_global else "not a public address"


@dataclass(frozen=True)
class AllowList:
    """`NOTIFY_ALLOW_HOSTS`: host names and networks reachable even when not public."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> AllowList:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in settings.allow_hosts:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry)
        return cls(frozenset(names), tuple(networks))

    def admits_host(self, host: str) -> bool:
        return _normalise_host(host) in self.names

    def admits_address(self, address: IPAddress) -> bool:
        embedded = _embedded_ipv4(address)
        return any(
            address in network or (embedded is not None and embedded in network)
            for network in self.networks
        )

    def check(self, host: str, addresses: list[IPAddress]) -> None:
        """Raise `AddressRefused` unless every address is public or allowed."""
        if self.admits_host(host):
            return
        for address in addresses:
            if self.admits_address(address):
                continue
            reason = address_refusal(address)
            if reason is not None:
                raise refused(host, address, reason)


def refused(host: str, address: IPAddress, reason: str) -> AddressRefused:
    """The refusal the caller sees: what kind of address for an IP literal they wrote, only
    "not public" for a host name (its resolved address would map the internal network)."""
    if _ip_literal(host) is not None:
        return AddressRefused(str(address), reason)
    return AddressRefused(host)


async def validate_url(url: str, settings: NotificationSettings) -> str:
    """Check a webhook URL and every address its host resolves to; return it normalised."""
    parsed = parse_url(url)
    host, port = host_port(parsed)
    AllowList.from_settings(settings).check(host, await resolve_host(host, port))
    return str(parsed)


def redact_url(url: str | httpx.URL) -> str:
    """`scheme://host[:port]` of a URL: its path and query often hold tokens, so never log them."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    port = "" if parsed.port is None else f":{parsed.port}"
    host = parsed.raw_host.decode("ascii", "replace")
    if ":" in host:
        host = f"[{host}]"
    return f"{parsed.scheme}://{host}{port}"


def parse_url(url: str) -> httpx.URL:
    """A webhook URL parsed; `InvalidWebhookUrl` (never quoting it) unless http(s) with a host
    and without credentials."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidWebhookUrl("webhook URL is empty")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError):
        # The parser's message may quote the URL, tokens and all.
        raise InvalidWebhookUrl("webhook URL is not a valid URL") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        raise InvalidWebhookUrl("webhook URL must start with http:// or https://")
    if not parsed.raw_host:
        raise InvalidWebhookUrl("webhook URL has no host")
    if parsed.userinfo:
        raise InvalidWebhookUrl("webhook URL must not contain credentials (user:password@)")
    return parsed


def host_port(url: httpx.URL) -> tuple[str, int]:
    """The normalised host and the port (the scheme's default if none) a URL connects to."""
    return _normalise_host(url.raw_host.decode("ascii")), url.port or _DEFAULT_PORTS[url.scheme]


def _normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(_normalise_host(host))
    except ValueError:
        return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None

"""Outgoing webhooks: destination checks (SSRF), HMAC signatures, retried delivery, templates.

A webhook URL is user input pointing our servers at the network, so every destination is
resolved and each of its addresses checked (`validate_url`) before anything is sent. The check
is repeated where the connection is made: `GuardedTransport` resolves the host itself, checks
every address and connects only to one it checked, so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot steer a request to an internal address.

Receivers check `X-Signature: sha256=<hex>` (HMAC-SHA256 of `<timestamp>.<body>`) and
`X-Signature-Timestamp` with `verify(...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import ipaddress
import logging
import random
import socket
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
import orjson

from src.admin.config import NotificationSettings
from src.admin.exceptions import (
    AddressRefused,
    HostUnresolvable,
    InvalidTemplateContext,
    InvalidWebhookPayload,
    InvalidWebhookUrl,
    UnknownTemplate,
    WebhookFailed,
    WebhookPayloadTooLarge,
    WebhookRejected,
)

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
SIGNATURE_PREFIX = "sha256="
EXCERPT_CHARS = 500
# UTF-8 spends at most 4 bytes a character: enough bytes for the excerpt, never the whole body.
_EXCERPT_BYTES = 4 * EXCERPT_CHARS
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


# -- destinations -------------------------------------------------------------------------------


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
                raise _refused(host, address, reason)


def _refused(host: str, address: IPAddress, reason: str) -> AddressRefused:
    """The refusal the caller sees: what kind of address for an IP literal they wrote, only
    "not public" for a host name (its resolved address would map the internal network)."""
    if _ip_literal(host) is not None:
        return AddressRefused(str(address), reason)
    return AddressRefused(host)


async def validate_url(url: str, settings: NotificationSettings) -> str:
    """Check a webhook URL and every address its host resolves to; return it normalised."""
    parsed = _parse_url(url)
    host, port = _host_port(parsed)
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


def _parse_url(url: str) -> httpx.URL:
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


def _host_port(url: httpx.URL) -> tuple[str, int]:
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


def _peer_address(stream: Any) -> IPAddress | None:
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not peer:
        return None
    try:
        return ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return None


# -- the guarded transport ----------------------------------------------------------------------


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host itself, then connects to a checked address only."""

    def __init__(self, allow: AllowList) -> None:
        self._allow = allow
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve_host(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from None
        except HostUnresolvable as exc:
            raise httpcore.ConnectError(exc.detail) from None
        self._allow.check(host, addresses)
        last_error: Exception = httpcore.ConnectError(f"no address of {host!r} to connect to")
        for address in addresses:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=left,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are never sent over a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore's errors as httpx's, most specific first (what `httpx.AsyncHTTPTransport` does too).
_ERROR_MAP: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core_error, httpx_error in _ERROR_MAP:
            if isinstance(exc, core_error):
                raise httpx_error(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to public (or allowed) addresses.

    Name resolution happens here, at connect time, and the connection goes to the very address
    that was checked; the request keeps the host name (Host header, TLS SNI and certificate
    check), and pooled connections stay keyed by host name.
    """

    def __init__(
        self,
        settings: NotificationSettings,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=20, max_keepalive_connections=5)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(AllowList.from_settings(settings)),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def create_webhook_client(settings: NotificationSettings) -> httpx.AsyncClient:
    """A client for webhooks: guarded transport, no redirects, no proxies from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(settings),
        timeout=settings.timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": settings.user_agent},
    )


def _peer_guard(host: str, allow: AllowList) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpcore `trace` hook refusing a new connection to a refused peer before it is used.

    `GuardedTransport` never makes such a connection; this covers a caller's own client (any
    httpcore-based transport without a proxy), whose resolver we cannot replace.
    """

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream: Any = info.get("return_value")
        peer = _peer_address(stream)
        if peer is None or allow.admits_host(host) or allow.admits_address(peer):
            return
        reason = address_refusal(peer)
        if reason is not None:
            await stream.aclose()
            raise _refused(host, peer, reason)

    return trace


# -- signatures ---------------------------------------------------------------------------------


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of `b"<timestamp>." + body` keyed with `secret`."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_headers(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """`X-Signature: sha256=<hex>` and `X-Signature-Timestamp` for `body`."""
    return {
        SIGNATURE_HEADER: SIGNATURE_PREFIX + sign(body, secret, timestamp),
        TIMESTAMP_HEADER: str(timestamp),
    }


def verify(
    body: bytes,
    secret: str,
    signature: str,
    timestamp: int | str,
    *,
    tolerance: float | None = 300,
    now: float | None = None,
) -> bool:
    """For receivers: does `signature` (`sha256=<hex>` or hex) sign `body` at `timestamp`?

    Compared in constant time; a timestamp further than `tolerance` seconds from `now` fails
    (replay protection; None accepts any age).
    """
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if tolerance is not None and abs(current - stamp) > tolerance:
        return False
    provided = signature.strip().removeprefix(SIGNATURE_PREFIX).lower()
    expected = sign(body, secret, stamp)
    return hmac.compare_digest(expected.encode(), provided.encode("utf-8", "replace"))


# -- delivery -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A delivered webhook: the receiver's status, attempts made, time taken, answer's start."""

    status_code: int
    attempts: int
    duration_ms: int
    response_excerpt: str


async def send_webhook(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str | None,
    settings: NotificationSettings,
    http: httpx.AsyncClient | None = None,
) -> DeliveryReport:
    """POST `payload` as signed JSON to `url`, retrying transient failures in process.

    Retried: 5xx, 429 and network errors or timeouts, with doubling, jittered backoff (a
    Retry-After up to `retry_after_max` is waited out; a longer one ends the send at once, its
    value in `WebhookFailed.retry_after`). Raises `WebhookRejected` at once for a 4xx or a
    redirect (never followed), `AddressRefused` for a refused destination, `WebhookFailed`
    when the attempts run out. `http` defaults to `create_webhook_client(settings)`; a client
    of your own should come from there too (see `_peer_guard` for what else is covered).
    """
    try:
        body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise InvalidWebhookPayload(f"webhook payload is not JSON-serialisable: {exc}") from None
    if len(body) > settings.max_payload_bytes:
        raise WebhookPayloadTooLarge(len(body), settings.max_payload_bytes)
    parsed = _parse_url(url)
    host, port = _host_port(parsed)
    target = redact_url(parsed)
    allow = AllowList.from_settings(settings)
    secret = secret or None
    client = http or create_webhook_client(settings)
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    attempt = 0
    try:
        for attempt in range(1, settings.max_attempts + 1):
            status, error, retry_after = None, None, None
            try:
                allow.check(host, await resolve_host(host, port))
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": settings.user_agent,
                }
                if secret is not None:
                    headers |= signature_headers(body, secret, int(time.time()))
                request = client.build_request(
                    "POST",
                    parsed,
                    content=body,
                    headers=headers,
                    timeout=settings.timeout,
                    extensions={"trace": _peer_guard(host, allow)},
                )
                # The whole exchange has a deadline too: httpx's timeouts are per read, so a
                # receiver dripping a byte at a time would otherwise hold the send forever.
                async with asyncio.timeout(settings.timeout):
                    response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    excerpt = await _excerpt(response, settings.timeout)
                finally:
                    await response.aclose()
            except HostUnresolvable as exc:
                error = exc.detail
            except (TimeoutError, httpx.TimeoutException):
                error = f"no answer within {settings.timeout:g} s"
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError):
                raise
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    duration_ms = round((time.monotonic() - started) * 1000)
                    logger.info(
                        "webhook to %s delivered: %d after %d attempt(s), %d ms",
                        target,
                        status,
                        attempt,
                        duration_ms,
                    )
                    return DeliveryReport(status, attempt, duration_ms, excerpt)
                if status != 429 and status < 500:
                    raise _rejection(response, target, excerpt, attempt)
                retry_after = _retry_after(response)
                error = f"answered {status}" + (f": {excerpt[:200]}" if excerpt else "")
            logger.warning("webhook to %s, attempt %d failed: %s", target, attempt, error)
            if retry_after is not None and retry_after > settings.retry_after_max:
                break
            if attempt < settings.max_attempts:
                await asyncio.sleep(
                    retry_after if retry_after is not None else _backoff(attempt, settings)
                )
    finally:
        if http is None:
            await client.aclose()
    raise WebhookFailed(
        f"webhook to {target} failed after {attempt} attempt(s): {error}"
        + (f"; receiver asks to retry in {retry_after:g} s" if retry_after is not None else ""),
        attempts=attempt,
        receiver_status=status,
        error=error,
        retry_after=retry_after,
    )


def _rejection(
    response: httpx.Response, target: str, excerpt: str, attempts: int
) -> WebhookRejected:
    status = response.status_code
    if 300 <= status < 400:
        location = response.headers.get("Location")
        try:
            where = f" to {redact_url(response.url.join(location))}" if location else ""
        except httpx.InvalidURL:
            where = ""
        detail = (
            f"webhook receiver at {target} answered {status}, a redirect{where}; "
            "redirects are not followed (they could lead to an internal address): "
            "configure the final URL"
        )
    else:
        detail = f"webhook receiver at {target} rejected the request with {status}" + (
            f": {excerpt[:200]}" if excerpt else ""
        )
    logger.warning("%s", detail)
    return WebhookRejected(detail, receiver_status=status, attempts=attempts)


async def _excerpt(response: httpx.Response, limit_s: float) -> str:
    """The start of the answer's body, read no further than needed (a body may be huge)."""
    data = bytearray()
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(limit_s):
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) >= _EXCERPT_BYTES:
                    break
    return data.decode("utf-8", "replace")[:EXCERPT_CHARS]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a 429/503's `Retry-After` asks for (a delay or an HTTP date), if any."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _backoff(attempt: int, settings: NotificationSettings) -> float:
    """Doubling delay after `attempt` failures, capped, with jitter (half fixed, half random)."""
    delay = min(settings.backoff * 2.0 ** (attempt - 1), settings.backoff_max)
    return delay / 2 + random.uniform(0, delay / 2)


# -- templates ----------------------------------------------------------------------------------


def _require(name: str, context: Mapping[str, Any], *keys: str) -> None:
    missing = [key for key in keys if context.get(key) is None]
    if missing:
        raise InvalidTemplateContext(
            f"template {name!r} needs {', '.join(missing)}", missing=missing
        )


def _timestamp(value: Any) -> str:
    """An ISO 8601 UTC time from a datetime, epoch seconds or a string; now when absent."""
    if value is None:
        value = datetime.now(UTC)
    elif isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _job_finished(context: Mapping[str, Any]) -> dict[str, Any]:
    _require("job_finished", context, "job_id", "function", "status")
    payload: dict[str, Any] = {
        "event": "job.finished",
        "job_id": str(context["job_id"]),
        "function": str(context["function"]),
        "status": str(context["status"]),
    }
    if context.get("error") is not None:
        payload["error"] = context["error"]
    else:
        payload["result"] = context.get("result")
    payload["finished_at"] = _timestamp(context.get("finished_at"))
    return payload


def _parse_finished(context: Mapping[str, Any]) -> dict[str, Any]:
    # Either {"job_id": ..., "result": <parse job result>} or the result's fields themselves.
    result = context.get("result")
    report: Mapping[str, Any] = result if isinstance(result, Mapping) else context
    _require("parse_finished", report, "group_id")
    skipped = report.get("posts_skipped") or []
    return {
        "event": "parse.finished",
        "job_id": context.get("job_id"),
        "group_id": report["group_id"],
        "screen_name": report.get("screen_name"),
        "posts": {
            "total": report.get("posts_total", 0),
            "done": report.get("posts_done", 0),
            "resumed": report.get("posts_resumed", 0),
            "skipped": len(skipped) if isinstance(skipped, list) else skipped,
        },
        "comments": {
            "parsed": report.get("comments_parsed", 0),
            "saved": report.get("comments_saved", 0),
            "inserted": report.get("comments_inserted", 0),
            "updated": report.get("comments_updated", 0),
            "unchanged": report.get("comments_unchanged", 0),
        },
        "finished_at": _timestamp(context.get("finished_at")),
    }


def _ping(context: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event": "webhook.ping",
        "message": str(context.get("message", "test notification")),
        "sent_at": _timestamp(context.get("sent_at")),
    }


TEMPLATES: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "job_finished": _job_finished,
    "parse_finished": _parse_finished,
    "ping": _ping,
}


def render_template(name: str, context: dict[str, Any]) -> dict[str, Any]:
    """The payload of the named template (`job_finished`, `parse_finished`, `ping`)."""
    template = TEMPLATES.get(name)
    if template is None:
        raise UnknownTemplate(name, sorted(TEMPLATES))
    return template(context)

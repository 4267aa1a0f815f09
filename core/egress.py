"""Every request the portal itself sends goes through here: tool connectors (HTTP and MCP),
compensate hooks, OPA and the notification webhooks.

A destination is allowed only when the platform operator listed it in ``LEDGER_EGRESS_ALLOW``
(host names, host:port, addresses or CIDR ranges; empty means nowhere). The check is made on
the **resolved address**, at connect time, and the connection goes to that very address (the
name is resolved once, checked, then connected to: a DNS answer that changes in between cannot
move the request elsewhere). Loopback, private, link-local and metadata addresses (everything
not globally routable) pass only when an entry covers them: a listed host name, or an address
or range that lies inside that special-purpose block (``0.0.0.0/0`` does not open
``169.254.169.254``). Proxies from the environment are ignored, redirects are not followed,
and a response body larger than ``LEDGER_EGRESS_MAX_BYTES`` is refused.

A refusal is an ``EgressRefused`` with a readable reason, raised before anything is sent.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2
from django.conf import settings

from core.env import parse_destination

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Special-purpose blocks an address is judged against when it is not globally routable: an
# allow entry opens such an address only if the entry lies inside its block.
SPECIAL_BLOCKS: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4", "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"))
# Never opened by a host name alone: only an address or range entry inside them does.
NAME_NEVER_OPENS: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128", "fe80::/10",
    "ff00::/8"))


class EgressRefused(Exception):
    """The destination is not one the platform operator allowed, or its answer is too big;
    nothing was sent (or nothing more is read)."""


@dataclass(frozen=True)
class AllowEntry:
    host: str | None
    network: Network | None
    port: int | None

    def admits_port(self, port: int) -> bool:
        return self.port is None or self.port == port


@lru_cache(maxsize=8)
def _entries(listed: tuple[str, ...]) -> tuple[AllowEntry, ...]:
    entries = []
    for item in listed:
        try:
            target, port = parse_destination(item)
        except ValueError as exc:
            raise EgressRefused(f"LEDGER_EGRESS_ALLOW: {exc}") from None
        try:
            entries.append(AllowEntry(None, ipaddress.ip_network(target), port))
        except ValueError:
            entries.append(AllowEntry(target, None, port))
    return tuple(entries)


def allow_list() -> tuple[AllowEntry, ...]:
    return _entries(tuple(settings.LEDGER_EGRESS_ALLOW))


def _plain(address: Address) -> Address:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:169.254.169.254 is 169.254.169.254
    return mapped if mapped is not None else address


def _block_of(address: Address) -> Network:
    for block in SPECIAL_BLOCKS:
        if address.version == block.version and address in block:
            return block
    return ipaddress.ip_network(address)  # a special address of its own (documentation, ...)


def _admitted(address: Address, host: str, port: int) -> bool:
    entries = [e for e in allow_list() if e.admits_port(port)]
    special = not address.is_global
    for entry in entries:
        network = entry.network
        if network is None or network.version != address.version or address not in network:
            continue
        if not special or network.subnet_of(_block_of(address)):  # type: ignore[arg-type]
            return True
    if any(entry.host == host for entry in entries):
        return not any(address.version == block.version and address in block
                       for block in NAME_NEVER_OPENS)
    return False


def _why_not(address: Address) -> str:
    if address.is_global:
        return "it is not in LEDGER_EGRESS_ALLOW"
    kind = ("loopback" if address.is_loopback else "link-local or metadata"
            if address.is_link_local else "private" if address.is_private else "special-purpose")
    return f"it is a {kind} address not listed in LEDGER_EGRESS_ALLOW"


def allowed_address(host: str, port: int) -> str:
    """Resolve ``host`` once and answer the first resolved address the allow list admits for
    this port (the address to connect to); ``EgressRefused`` when there is none."""
    name = host.strip("[]").lower().rstrip(".")
    try:
        addresses = [_plain(ipaddress.ip_address(name))]
    except ValueError:
        try:
            found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise EgressRefused(f"{name}:{port} cannot be resolved ({exc})") from None
        addresses = [_plain(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in found]
    refused = []
    for address in addresses:
        if _admitted(address, name, port):
            return str(address)
        refused.append(f"{address} ({_why_not(address)})")
    raise EgressRefused(f"egress to {name}:{port} refused: {'; '.join(refused) or 'no address'}")


def check_url(url: str) -> None:
    """Raise ``EgressRefused`` unless ``url`` is http(s) to an allowed destination."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRefused(f"{url!r} is not an http(s) URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise EgressRefused(f"{url!r} has an invalid port") from None
    allowed_address(parts.hostname, port)


class _GuardedBackend(httpcore2.NetworkBackend):
    """Connects only to the checked address (TLS still verifies the host name)."""

    def __init__(self) -> None:
        self._inner = httpcore2.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore2.NetworkStream:
        return self._inner.connect_tcp(allowed_address(host, port), port, timeout,
                                       local_address, socket_options)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore2.NetworkStream:
        raise EgressRefused("unix sockets are not an egress destination")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncGuardedBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore2.AsyncNetworkStream:
        import anyio.to_thread

        address = await anyio.to_thread.run_sync(allowed_address, host, port)
        return await self._inner.connect_tcp(address, port, timeout, local_address,
                                             socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore2.AsyncNetworkStream:
        raise EgressRefused("unix sockets are not an egress destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _too_big(size: int) -> EgressRefused:
    return EgressRefused(f"the answer is larger than LEDGER_EGRESS_MAX_BYTES "
                         f"({settings.LEDGER_EGRESS_MAX_BYTES} bytes; {size} or more)")


def _check_length(response: httpx2.Response) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.LEDGER_EGRESS_MAX_BYTES:
        raise _too_big(int(declared))


class _CappedStream(httpx2.SyncByteStream):
    def __init__(self, inner: Any) -> None:
        self._inner, self._seen = inner, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._seen += len(chunk)
            if self._seen > settings.LEDGER_EGRESS_MAX_BYTES:
                raise _too_big(self._seen)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _AsyncCappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any) -> None:
        self._inner, self._seen = inner, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._seen += len(chunk)
            if self._seen > settings.LEDGER_EGRESS_MAX_BYTES:
                raise _too_big(self._seen)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _GuardedTransport(httpx2.HTTPTransport):
    def __init__(self) -> None:
        super().__init__(trust_env=False)  # an environment proxy would bypass the check
        self._pool = httpcore2.ConnectionPool(network_backend=_GuardedBackend())

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        try:
            _check_length(response)
        except EgressRefused:
            response.close()
            raise
        return httpx2.Response(response.status_code, headers=response.headers,
                               stream=_CappedStream(response.stream),
                               extensions=response.extensions)


class _AsyncGuardedTransport(httpx2.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore2.AsyncConnectionPool(network_backend=_AsyncGuardedBackend())

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        try:
            _check_length(response)
        except EgressRefused:
            await response.aclose()
            raise
        return httpx2.Response(response.status_code, headers=response.headers,
                               stream=_AsyncCappedStream(response.stream),
                               extensions=response.extensions)


@lru_cache(maxsize=1)
def client() -> httpx2.Client:
    """One pooled client per process; redirects are never followed."""
    return httpx2.Client(transport=_GuardedTransport(), follow_redirects=False, trust_env=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=client.cache_clear)  # sockets are not shared on fork


def async_client(headers: dict[str, str], timeout: float) -> httpx2.AsyncClient:
    """A client for async callers (the MCP connector), with the same guard."""
    return httpx2.AsyncClient(transport=_AsyncGuardedTransport(), headers=headers,
                              timeout=timeout, follow_redirects=False, trust_env=False)


def post(url: str, *, content: bytes, headers: dict[str, str],
         timeout: float) -> httpx2.Response:
    """POST to an allowed destination; the answer is read whole (at most the size cap).

    Raises ``EgressRefused`` (nothing sent, or the answer too big) and httpx2's transport
    errors."""
    check_url(url)
    return client().post(url, content=content, headers=headers, timeout=timeout)


__all__ = ["EgressRefused", "allowed_address", "async_client", "check_url", "client", "post"]

"""The SSRF guard of `http.request`: where a URL may lead.

A URL passes when its scheme is http or https and every address its host resolves to is a
public (globally routable) unicast address, or is opened by the allow-list. The host is resolved
here, by the system resolver, which reads every spelling an attacker may use (`127.1`,
`2130706433`, `0x7f000001`, `0177.0.0.1`, `[::ffff:127.0.0.1]`) as the address it is; the
addresses checked are the ones the connection then uses (the request is pinned to the checked
address, so a second DNS answer cannot swap in another). Each redirect is checked again.

Blocked: loopback, private (RFC 1918, ULA), link-local (169.254/16, fe80::/10, so the cloud
metadata service 169.254.169.254), shared (100.64/10), unspecified, multicast, reserved and
documentation ranges; IPv4 embedded in IPv6 (mapped, compatible, NAT64, 6to4, Teredo) is
judged by the IPv4 address inside.

Allow-list entries: a host name (`orders.internal`, exact, case-insensitive), an address
(`127.0.0.1`, `::1`), a network (`10.0.0.0/8`), optionally with a port (`127.0.0.1:8080`,
`orders.internal:443`, `[::1]:8080`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class Blocked(Exception):
    """The URL leads somewhere the guard forbids; the message says why."""


@dataclass(frozen=True, slots=True)
class _Entry:
    host: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: connect to `address`, speak to `host`."""

    scheme: str
    host: str
    port: int
    address: str


def _split_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    packed = ip.packed
    if packed[:12] == b"\x00" * 12 and int(ip) > 1:  # IPv4-compatible ::a.b.c.d (deprecated)
        return ipaddress.IPv4Address(packed[12:])
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether `ip` is a globally routable unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = _embedded_v4(ip)
        if inner is not None:
            return is_public(inner)
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        return False
    if ip.is_private or ip.is_reserved:
        return False
    return ip.is_global


class Guard:
    def __init__(self, allow: Iterable[str] = ()) -> None:
        self._entries: list[_Entry] = []
        for raw in allow:
            text = str(raw).strip()
            if not text:
                continue
            try:
                self._entries.append(_Entry(network=ipaddress.ip_network(text, strict=False)))
                continue
            except ValueError:
                pass
            try:
                host, port = _split_port(text)
            except ValueError:
                raise ValueError(f"allow-list entry {text!r}: bad port") from None
            try:
                self._entries.append(
                    _Entry(network=ipaddress.ip_network(host, strict=False), port=port)
                )
            except ValueError:
                self._entries.append(_Entry(host=host.lower().rstrip("."), port=port))

    def _host_allowed(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        return any(e.host == host and e.port in (None, port) for e in self._entries)

    def _address_allowed(self, ip: IPAddress, port: int) -> bool:
        for e in self._entries:
            if e.network is None or e.port not in (None, port):
                continue
            candidates = [ip]
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                candidates.append(ip.ipv4_mapped)
            if any(c.version == e.network.version and c in e.network for c in candidates):
                return True
        return False

    async def check(self, scheme: str, host: str, port: int | None) -> Target:
        """Resolves `host` and returns where to connect, or raises Blocked."""
        scheme = scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise Blocked(f"scheme {scheme or '(none)'!r} is not allowed: only http and https")
        if not host:
            raise Blocked("the URL has no host")
        host = host.strip("[]")
        if port is None:
            port = 443 if scheme == "https" else 80
        if "%" in host:
            raise Blocked("scoped IPv6 addresses are not allowed")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, ValueError) as exc:
            raise Blocked(f"cannot resolve host {host!r}: {exc}") from None
        addresses: list[IPAddress] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise Blocked(f"host {host!r} has no IP address")
        named_ok = self._host_allowed(host, port)
        for ip in addresses:
            if named_ok or self._address_allowed(ip, port):
                continue
            if not is_public(ip):
                raise Blocked(f"host {host!r} resolves to {ip}, a non-public address")
        return Target(scheme=scheme, host=host, port=port, address=str(addresses[0]))

"""SSRF guard: a target may only resolve to public addresses, unless an operator allowlists a CIDR.

Decision and resolution are separate so the decision is tested on any address without traffic.
The checked address is returned and the relay connects to exactly that one (DNS pinning), so a
second, different DNS answer (rebinding) cannot redirect the socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from polysocket_core.errors import ErrorCode, PolysocketError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Ranges Python's is_global misses or that deserve naming: CGNAT, benchmarking, 6to4 relay
# anycast, deprecated IPv6 site-local.
EXTRA_BLOCKED = [ipaddress.ip_network(n) for n in
                 ("100.64.0.0/10", "198.18.0.0/15", "192.88.99.0/24", "fec0::/10")]
# IPv6 prefixes that carry an IPv4 address in their last 32 bits and are translated to it by a
# NAT64 / SIIT gateway (RFC 6052 well-known and local-use prefixes, RFC 6145 ::ffff:0:0:0/96).
TRANSLATED = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96")]


def parse_cidrs(raw: str) -> list[IPNetwork]:
    """``POLYSOCKET_ALLOW_TARGET_CIDRS``: comma-separated CIDRs; raises ValueError on a bad one."""
    return [ipaddress.ip_network(item.strip(), strict=False) for item in raw.split(",") if item.strip()]


def literal_ip(host: str) -> IPAddress | None:
    """The address a host string denotes literally, including legacy IPv4 forms browsers and libc
    accept: decimal ``2130706433``, hex ``0x7f000001``, octal ``0177.0.0.1``, short ``127.1``."""
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded(ip: IPAddress) -> Iterable[IPAddress]:
    """The address and every IPv4 address tunnelled inside it (6to4, Teredo, IPv4-compatible)."""
    yield ip
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in (ip.sixtofour, ip.teredo[1] if ip.teredo else None):
            if inner is not None:
                yield inner
        if ip.packed[:12] == b"\x00" * 12 and not ip.is_unspecified and not ip.is_loopback:
            yield ipaddress.IPv4Address(ip.packed[12:])  # IPv4-compatible ::a.b.c.d
        if any(ip in net for net in TRANSLATED):
            yield ipaddress.IPv4Address(ip.packed[12:])


def is_blocked(ip: IPAddress, allow: list[IPNetwork]) -> bool:
    """True unless the address (and anything tunnelled in it) is globally routable, or allowlisted."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket
    if any(ip in net for net in allow if net.version == ip.version):
        return False
    for form in _embedded(ip):
        extra = any(form in n for n in EXTRA_BLOCKED if n.version == form.version)
        if not form.is_global or form.is_multicast or extra:
            return True
    return False


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_target(target: str, allow: list[IPNetwork], resolve: Resolver = system_resolve) -> list[str]:
    """Resolve the target's host; return the checked addresses to pin (in resolver order), or raise
    ``blocked_target`` if any of them is not public."""
    parts = urlsplit(target)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    literal = literal_ip(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            raw = await resolve(host.rstrip("."), port)
        except (OSError, UnicodeError) as exc:
            raise PolysocketError(ErrorCode.UPSTREAM_FAILED, f"cannot resolve target host {host!r}: {exc}") from None
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in raw]
        if not addresses:
            raise PolysocketError(ErrorCode.UPSTREAM_FAILED, f"target host {host!r} has no address")
    for ip in addresses:
        if is_blocked(ip, allow):
            raise PolysocketError(
                ErrorCode.BLOCKED_TARGET,
                f"target {host!r} resolves to a non-public address; "
                "an operator can allow such ranges with POLYSOCKET_ALLOW_TARGET_CIDRS",
            )
    return list(dict.fromkeys(str(ip) for ip in addresses))

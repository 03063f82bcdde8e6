"""Which addresses outbound calls may reach: the SSRF guard.

Template authors (tenant admins) choose webhook URLs, so without a guard any of them could make the worker call the
cloud metadata service, the database, or an admin port on the internal network and read the answer back through
the timeline. The policy refuses every address that is not a public unicast address: loopback, private, link-local,
shared (CGNAT), unspecified, multicast, reserved, documentation and benchmarking ranges, the cloud metadata
addresses, and the IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo), which are judged
by the IPv4 address they carry.

Names are resolved here, once, with the operating system's resolver (so `127.1`, `2130706433`, `0x7f000001` and
`0177.0.0.1` mean what they mean to the OS), and a name is refused when ANY of its addresses is refused: the caller
then connects to one of the returned, vetted addresses, never to the name again (see `outbound.http`), so a DNS
answer that changes between the check and the connection (rebinding) cannot reach a refused address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
Policy = Callable[[IPAddress], "str | None"]


class OutboundError(Exception):
    """An outbound call did not produce a response. `retryable`: worth another attempt (timeouts, refused
    connections), as opposed to a refused address or a malformed URL, which will fail the same way again."""

    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboundBlocked(OutboundError):
    """The destination is refused by the address policy (or the URL is not one we call at all)."""


def _net4(*cidrs: str) -> tuple[ipaddress.IPv4Network, ...]:
    return tuple(ipaddress.IPv4Network(c) for c in cidrs)


def _net6(*cidrs: str) -> tuple[ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.IPv6Network(c) for c in cidrs)


# Cloud metadata endpoints, named so the reason says what was being reached. 169.254.169.254 (AWS, GCP, Azure,
# OpenStack...), 168.63.129.16 (Azure's wire server, a public address reachable only from inside Azure),
# 100.100.100.200 (Alibaba), fd00:ec2::254 (AWS over IPv6).
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "168.63.129.16", "100.100.100.200", "fd00:ec2::254")
)

_V4_RANGES: tuple[tuple[tuple[ipaddress.IPv4Network, ...], str], ...] = (
    (_net4("0.0.0.0/8"), "unspecified ('this network') address"),
    (_net4("127.0.0.0/8"), "loopback address"),
    (_net4("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "private address (RFC 1918)"),
    (_net4("169.254.0.0/16"), "link-local address"),
    (_net4("100.64.0.0/10"), "shared address space (CGNAT)"),
    (_net4("192.0.0.0/24"), "IETF protocol assignment"),
    (_net4("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"), "documentation address"),
    (_net4("198.18.0.0/15"), "benchmarking address"),
    (_net4("192.88.99.0/24"), "6to4 relay anycast address"),
    (_net4("224.0.0.0/4"), "multicast address"),
    (_net4("255.255.255.255/32"), "broadcast address"),
    (_net4("240.0.0.0/4"), "reserved address"),
)

_V6_RANGES: tuple[tuple[tuple[ipaddress.IPv6Network, ...], str], ...] = (
    (_net6("::/128"), "unspecified address"),
    (_net6("::1/128"), "loopback address"),
    (_net6("fc00::/7"), "unique local (private) address"),
    (_net6("fe80::/10"), "link-local address"),
    (_net6("fec0::/10"), "site-local address"),
    (_net6("ff00::/8"), "multicast address"),
    (_net6("64:ff9b:1::/48"), "local-use NAT64 address"),
    (_net6("100::/64"), "discard-only address"),
    (_net6("2001:db8::/32", "3fff::/20"), "documentation address"),
    (_net6("2001:2::/48"), "benchmarking address"),
    (_net6("2001:10::/28", "2001:20::/28"), "ORCHID address"),
)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, with the name of the form, or [] for a plain IPv6 address."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _MAPPED:
        return [("IPv4-mapped", low32)]
    if ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves, not IPv4-compatible forms
        return [("IPv4-compatible", low32)]
    if ip in _NAT64:
        return [("NAT64", low32)]
    if ip in _SIXTOFOUR:
        return [("6to4", ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF))]
    if ip in _TEREDO:
        server = ipaddress.IPv4Address((int(ip) >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~int(ip) & 0xFFFFFFFF)
        return [("Teredo client", client), ("Teredo server", server)]
    return []


def _v4_reason(ip: ipaddress.IPv4Address) -> str | None:
    if ip in METADATA:
        return "cloud metadata address"
    for networks, reason in _V4_RANGES:
        if any(ip in n for n in networks):
            return reason
    if not ip.is_global:  # anything Python knows to be non-global that the list above does not name
        return "not a globally routable address"
    return None


def is_forbidden(ip: IPAddress) -> str | None:
    """Why `ip` may not be called (a short phrase), or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv4Address):
        reason = _v4_reason(ip)
        return f"{ip}: {reason}" if reason else None
    if ip.scope_id:
        ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
    if ip in METADATA:
        return f"{ip}: cloud metadata address"
    for form, v4 in _embedded_v4(ip):
        reason = _v4_reason(v4)
        if reason:
            return f"{ip}: {form} form of {v4}, {reason}"
    if _embedded_v4(ip):
        return None  # judged by the IPv4 address it carries, which is public
    for networks, reason in _V6_RANGES:
        if any(ip in n for n in networks):
            return f"{ip}: {reason}"
    if not ip.is_global:
        return f"{ip}: not a globally routable address"
    return None


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every A/AAAA address of `host`, in the resolver's order, through the event loop's getaddrinfo: numeric
    forms (`127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`) are read the way the OS reads them."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


# A resolver that is temporarily unable to answer is worth another attempt; a name that does not exist is not.
_TRANSIENT_DNS = frozenset(e for e in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)) if e is not None)


def literal_address(host: str) -> IPAddress | None:
    """`host` as an address when it is a standard IPv4 dotted quad or IPv6 literal, else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve_allowed(
    host: str,
    port: int,
    allow_private: bool,
    *,
    resolver: Resolver | None = None,
    policy: Policy = is_forbidden,
) -> list[IPAddress]:
    """The addresses of `host` to connect to; raises OutboundBlocked when any of them is refused by `policy` (unless
    `allow_private`), and OutboundError when the name does not resolve.

    `resolver` replaces the system resolver (tests use it to make a name resolve where they want); a literal address
    is never handed to it. `policy` replaces `is_forbidden` (a stricter deployment policy, or a test seam).
    """
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = await (resolver or system_resolve)(host, port)
        except socket.gaierror as exc:
            error = OutboundError(f"cannot resolve {host!r}: {exc.strerror or exc}")
            error.retryable = exc.errno in _TRANSIENT_DNS
            raise error from None
        except (UnicodeError, ValueError) as exc:  # not a name the resolver can even look up
            raise OutboundError(f"cannot resolve {host!r}: {exc}") from None
    if not addresses:
        raise OutboundError(f"{host!r} has no address")
    if not allow_private:
        for address in addresses:
            reason = policy(address)
            if reason:
                raise OutboundBlocked(reason if literal is not None else f"{host} resolves to {reason}")
    return addresses

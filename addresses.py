"""Pure address logic: picking client addresses and working out who is calling."""

from __future__ import annotations

import functools
import ipaddress
import secrets
import socket
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from literals import IPNetwork

IPAddress = IPv4Address | IPv6Address

# Pools up to this size are enumerated, so a nearly full small subnet still finds its
# last free address at once; larger ones are sampled at random.
ENUMERATE_LIMIT = 1 << 16


def is_reserved(subnet: IPv6Network, server: IPv6Address, address: IPv6Address) -> bool:
    """Addresses never handed to a client: the subnet's zero address and the server's."""
    return address in (subnet.network_address, server)


def free_addresses(
    subnet: IPv6Network, server: IPv6Address, taken: Iterable[str]
) -> list[IPv6Address]:
    """Every address of a small subnet that is neither reserved nor in `taken`."""
    used = {int(IPv6Address(a)) for a in taken} | {int(subnet.network_address), int(server)}
    first = int(subnet.network_address)
    return [IPv6Address(n) for n in range(first, first + subnet.num_addresses) if n not in used]


def random_candidates(
    subnet: IPv6Network,
    server: IPv6Address,
    count: int,
    randbelow: Callable[[int], int] = secrets.randbelow,
) -> list[IPv6Address]:
    """`count` distinct random unreserved addresses of a large subnet."""
    if count > subnet.num_addresses - 2:
        raise ValueError(f"{subnet} has fewer than {count} unreserved addresses")
    first = int(subnet.network_address)
    picked: dict[IPv6Address, None] = {}
    while len(picked) < count:
        address = IPv6Address(first + randbelow(subnet.num_addresses))
        if not is_reserved(subnet, server, address):
            picked[address] = None
    return list(picked)


def ip6_text(address: IPv6Address) -> str:
    """`str(address)`, written by the C library: the same RFC 5952 text, ten times faster
    (registration writes each new address several times). Within ::/80, where the C
    library would spell an embedded IPv4 address, Python's own text."""
    if int(address) >> 48 == 0:
        return str(address)
    return socket.inet_ntop(socket.AF_INET6, address.packed)


def peer_text(address: IPv6Address | str) -> str:
    """A peer's address as text (see `ip6_text`), whether given as text or not."""
    return address if isinstance(address, str) else ip6_text(address)


def normalize_ip(text: str) -> IPAddress:
    """Parse an address, dropping any IPv6 scope and unwrapping IPv4-mapped forms.

    Raises `ValueError` for text that is not an IP address. Every request parses its
    peer's address and its Host header, mostly the same few again and again: short texts
    are answered from a cache (a long one, which may come from a header, is not kept).
    """
    return _parse_cached(text) if len(text) <= CACHED_TEXT else _parse(text)


CACHED_TEXT = 64  # an IPv6 address in brackets with a short zone


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> IPAddress:
    return _parse(text)


def _parse(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


def resolve_client_ip(
    peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> tuple[IPAddress, bool]:
    """The real client address, and whether it came from a trusted proxy's header.

    `X-Forwarded-For` is read only when the TCP peer is a trusted proxy; then the client
    is the right-most entry that is not itself a trusted proxy. Raises `ValueError` when
    an address that must be used cannot be parsed.
    """
    address = normalize_ip(peer)
    if not forwarded_for or not is_trusted(address, trusted):
        return address, False
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        candidate = normalize_ip(hop)
        if not is_trusted(candidate, trusted):
            return candidate, True
    return address, False

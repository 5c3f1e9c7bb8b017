"""Strict parsing of the address literals a config may hold.

Python's `ipaddress` accepts IPv6 scope IDs (`fe80::1%<anything>`, newlines included)
and, with `strict=False`, silently widens `192.168.1.10/24` to the whole network. Config
values end up in wg-quick files that root runs, so here an address is only what the
address grammar allows: hex digits, dots and colons, then an optional `/prefix` of
digits. Anything else — a scope, spaces, a second line — is refused before `ipaddress`
sees it.
"""

from __future__ import annotations

import ipaddress
import re

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ADDRESS_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}")
NETWORK_TEXT = re.compile(r"([0-9A-Fa-f:.]{2,45})(?:/([0-9]{1,3}))?")


def parse_address(value: object) -> IPAddress:
    """An IPv4 or IPv6 address without scope ID; `ValueError` with a sentence otherwise."""
    text = value if isinstance(value, str) else str(value)
    if "%" in text:
        raise ValueError(f"{value!r} carries a scope ID (%…), which is not allowed here")
    if not ADDRESS_TEXT.fullmatch(text):
        raise ValueError(f"{value!r} is not an IP address")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def parse_network(value: object) -> IPNetwork:
    """An address or CIDR (a bare address is its /32 or /128) without host bits.

    `192.168.1.10/24` is refused with a sentence naming `192.168.1.0/24`: widening it
    silently would admit the whole LAN where one host may have been meant.
    """
    text = value if isinstance(value, str) else str(value)
    if "%" in text:
        raise ValueError(f"{value!r} carries a scope ID (%…), which is not allowed here")
    match = NETWORK_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(f"{value!r} is not an IP address or CIDR")
    address = parse_address(match.group(1))
    prefix = address.max_prefixlen if match.group(2) is None else int(match.group(2))
    if prefix > address.max_prefixlen:
        raise ValueError(f"{value!r} has a prefix length over {address.max_prefixlen}")
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    if network.network_address != address:
        raise ValueError(
            f"{value!r} has host bits set; write the network {network} "
            f"(or {address}/{address.max_prefixlen} for the one address)"
        )
    return network

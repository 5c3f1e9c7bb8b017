"""addresses.py: address allocation and caller identification."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_network

import pytest

import addresses
from addresses import (
    CACHED_TEXT,
    free_addresses,
    ip6_text,
    is_reserved,
    normalize_ip,
    random_candidates,
    resolve_client_ip,
)

SUBNET = IPv6Network("fd00::/126")
SERVER = IPv6Address("fd00::1")


def test_free_addresses_of_small_subnet() -> None:
    assert free_addresses(SUBNET, SERVER, []) == [IPv6Address("fd00::2"), IPv6Address("fd00::3")]


def test_free_addresses_excludes_taken() -> None:
    assert free_addresses(SUBNET, SERVER, ["fd00::2"]) == [IPv6Address("fd00::3")]
    assert free_addresses(SUBNET, SERVER, ["fd00:0:0:0:0:0:0:3", "fd00::2"]) == []


def test_free_addresses_with_server_elsewhere() -> None:
    free = free_addresses(SUBNET, IPv6Address("fd00::3"), [])
    assert free == [IPv6Address("fd00::1"), IPv6Address("fd00::2")]


@pytest.mark.parametrize(
    ("address", "reserved"),
    [("fd00::", True), ("fd00::1", True), ("fd00::2", False), ("fd00::3", False)],
)
def test_is_reserved(address: str, reserved: bool) -> None:
    assert is_reserved(SUBNET, SERVER, IPv6Address(address)) is reserved


def scripted(values: list[int]) -> tuple[list[int], Callable[[int], int]]:
    """A `randbelow` that returns `values` in order and records each bound it was given."""
    bounds: list[int] = []
    stream: Iterator[int] = iter(values)

    def randbelow(bound: int) -> int:
        bounds.append(bound)
        value = next(stream)
        assert 0 <= value < bound
        return value

    return bounds, randbelow


def test_random_candidates_skip_reserved_and_duplicates() -> None:
    subnet = IPv6Network("fd00::/64")
    bounds, randbelow = scripted([0, 1, 5, 5, 1, 7, 2**64 - 1])
    picked = random_candidates(subnet, SERVER, 3, randbelow)
    assert picked == [
        IPv6Address("fd00::5"),
        IPv6Address("fd00::7"),
        IPv6Address("fd00::ffff:ffff:ffff:ffff"),
    ]
    assert bounds == [2**64] * 7


def test_random_candidates_are_distinct_and_unreserved() -> None:
    subnet = IPv6Network("fd00::/120")
    picked = random_candidates(subnet, IPv6Address("fd00::1"), 200)
    assert len(set(picked)) == 200
    assert all(address in subnet for address in picked)
    assert subnet.network_address not in picked
    assert IPv6Address("fd00::1") not in picked


def test_random_candidates_zero_count() -> None:
    _, randbelow = scripted([])
    assert random_candidates(SUBNET, SERVER, 0, randbelow) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.7", IPv4Address("192.0.2.7")),
        ("::ffff:192.0.2.7", IPv4Address("192.0.2.7")),
        ("::ffff:c000:207", IPv4Address("192.0.2.7")),
        ("fe80::1%eth0", IPv6Address("fe80::1")),
        ("[fe80::1%eth0]", IPv6Address("fe80::1")),
        ("[2001:db8::1]", IPv6Address("2001:db8::1")),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", IPv6Address("2001:db8::1")),
        ("  fd00::2 ", IPv6Address("fd00::2")),
        ("::1", IPv6Address("::1")),
    ],
)
def test_normalize_ip(text: str, expected: IPv4Address | IPv6Address) -> None:
    assert normalize_ip(text) == expected


@pytest.mark.parametrize("text", ["", "garbage", "1.2.3.256", "fd00::1::2", "unknown"])
def test_normalize_ip_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        normalize_ip(text)


def test_normalize_ip_caches_only_short_texts() -> None:
    """A long text (a header's) is parsed every time, never kept in the cache."""
    cache = addresses._parse_cached
    long_text = "fe80::1%" + "x" * CACHED_TEXT
    before = cache.cache_info()
    assert normalize_ip(long_text) == normalize_ip(long_text) == IPv6Address("fe80::1")
    assert cache.cache_info() == before
    assert normalize_ip("192.0.2.99") == normalize_ip("192.0.2.99") == IPv4Address("192.0.2.99")
    assert cache.cache_info().hits > before.hits


WORDS = (0, 0, 0, 1, 0xFFFF, 0xFD00)


def structured_addresses(count: int) -> Iterator[IPv6Address]:
    """Random addresses rich in the shapes text forms differ on: runs of zero words (ties
    included), ::/96, ::ffff:0:0/96 and ::1."""
    rng = random.Random(5952)
    yield from (IPv6Address(0), IPv6Address(1), IPv6Address("::ffff:192.0.2.7"))
    for _ in range(count):
        words = [
            rng.choice(WORDS) if rng.random() < 0.7 else rng.randrange(1 << 16) for _ in range(8)
        ]
        yield IPv6Address(sum(word << (16 * (7 - index)) for index, word in enumerate(words)))


def test_ip6_text_is_pythons_text() -> None:
    for address in structured_addresses(50_000):
        assert ip6_text(address) == str(address), address


PROXIES = (ip_network("10.0.0.0/8"), ip_network("fd00:ffff::/32"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # Untrusted peers: the header is ignored.
        ("198.51.100.9", ["203.0.113.5"], (IPv4Address("198.51.100.9"), False)),
        ("::ffff:198.51.100.9", ["203.0.113.5"], (IPv4Address("198.51.100.9"), False)),
        ("fd00::2", ["203.0.113.5"], (IPv6Address("fd00::2"), False)),
        # Trusted peer without a header: the peer itself.
        ("10.0.0.1", [], (IPv4Address("10.0.0.1"), False)),
        # Trusted peer: the right-most entry that is not a trusted proxy.
        ("10.0.0.1", ["203.0.113.5"], (IPv4Address("203.0.113.5"), True)),
        (
            "10.0.0.1",
            ["1.1.1.1, 203.0.113.5, 10.0.0.2", "10.0.0.3"],
            (IPv4Address("203.0.113.5"), True),
        ),
        ("fd00:ffff::1", ["garbage, 2001:db8::5"], (IPv6Address("2001:db8::5"), True)),
        ("10.0.0.1", ["[2001:db8::5]"], (IPv6Address("2001:db8::5"), True)),
        ("10.0.0.1", [" , ::ffff:203.0.113.5 ,"], (IPv4Address("203.0.113.5"), True)),
        # Only trusted proxies in the chain: fall back to the peer.
        ("10.0.0.1", ["10.0.0.2, fd00:ffff::9"], (IPv4Address("10.0.0.1"), False)),
        ("10.0.0.1", [""], (IPv4Address("10.0.0.1"), False)),
    ],
)
def test_resolve_client_ip(
    peer: str, forwarded: list[str], expected: tuple[IPv4Address | IPv6Address, bool]
) -> None:
    assert resolve_client_ip(peer, forwarded, PROXIES) == expected


def test_resolve_client_ip_without_trusted_proxies() -> None:
    assert resolve_client_ip("10.0.0.1", ["203.0.113.5"], ()) == (IPv4Address("10.0.0.1"), False)


@pytest.mark.parametrize(
    ("peer", "forwarded"),
    [
        ("not-an-ip", []),
        ("10.0.0.1", ["203.0.113.5, garbage"]),
        ("10.0.0.1", ["unknown"]),
    ],
)
def test_resolve_client_ip_rejects_garbage(peer: str, forwarded: list[str]) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        resolve_client_ip(peer, forwarded, PROXIES)

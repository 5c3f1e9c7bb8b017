"""Property tests (hypothesis) for address allocation and hostname assignment."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from sqlalchemy.orm import Session

from addresses import free_addresses, is_reserved, random_candidates
from config import FleetConfig
from database import CLIENTS, Base, make_engine
from errors import PoolExhausted
from hostnames import HOSTNAME, MAX_LENGTH, choose_hostname, numbered, search_prefix
from registry import pick_addresses

PROPERTIES = settings(max_examples=60, deadline=None, derandomize=True, database=None)
MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def subnets(draw: st.DrawFn, shortest: int, longest: int) -> tuple[IPv6Network, IPv6Address]:
    """A subnet of prefix length shortest..longest and a server address inside it."""
    prefix = draw(st.integers(shortest, longest))
    bits = draw(st.integers(0, (1 << 128) - 1))
    subnet = IPv6Network((bits, prefix), strict=False)
    offset = draw(st.integers(1, subnet.num_addresses - 1))
    return subnet, subnet.network_address + offset


# --- addresses ---------------------------------------------------------------------------


@PROPERTIES
@given(data=st.data(), network=subnets(118, 127))
def test_free_addresses_are_exactly_the_unreserved_untaken_ones(
    data: st.DataObject, network: tuple[IPv6Network, IPv6Address]
) -> None:
    subnet, server = network
    everything = list(subnet)
    taken = data.draw(st.sets(st.sampled_from(everything), max_size=len(everything)))
    # Taken addresses come from the database as text, in any spelling.
    spelled = [address.exploded if i % 2 else str(address) for i, address in enumerate(taken)]

    free = free_addresses(subnet, server, spelled)

    assert len(free) == len(set(free))
    assert all(address in subnet for address in free)
    assert not any(is_reserved(subnet, server, address) for address in free)
    assert set(free) == set(everything) - taken - {subnet.network_address, server}


@PROPERTIES
@given(data=st.data(), network=subnets(64, 126), seed=st.integers(0, 2**32))
def test_random_candidates_are_distinct_unreserved_and_inside(
    data: st.DataObject, network: tuple[IPv6Network, IPv6Address], seed: int
) -> None:
    subnet, server = network
    count = data.draw(st.integers(0, min(subnet.num_addresses - 2, 300)))

    picked = random_candidates(subnet, server, count, randbelow=Random(seed).randrange)

    assert len(picked) == count
    assert len(set(picked)) == count
    assert all(address in subnet for address in picked)
    assert not any(is_reserved(subnet, server, address) for address in picked)


@PROPERTIES
@given(network=subnets(120, 127))
def test_random_candidates_refuse_more_than_there_are(
    network: tuple[IPv6Network, IPv6Address],
) -> None:
    subnet, server = network
    with pytest.raises(ValueError, match="fewer than"):
        random_candidates(subnet, server, subnet.num_addresses - 1)


@settings(PROPERTIES, max_examples=25)
@given(network=subnets(120, 126), sizes=st.lists(st.integers(1, 40), min_size=1))
def test_pick_addresses_fills_the_pool_exactly_then_is_exhausted(
    network: tuple[IPv6Network, IPv6Address], sizes: list[int]
) -> None:
    subnet, server = network
    settings_ = FleetConfig(ip6=server, subnet=subnet, external_ip="192.0.2.1", port=51820)
    pool = subnet.num_addresses - 2
    with tempfile.TemporaryDirectory() as directory:
        engine = make_engine(str(Path(directory) / "clients.db"))
        try:
            Base.metadata.create_all(engine)
            given_out: list[IPv6Address] = []
            with Session(engine) as session:
                for size in [*sizes, pool]:  # the last request takes whatever is left
                    count = min(size, pool - len(given_out))
                    if count == 0:
                        break
                    picked = pick_addresses(session, "f", settings_, count)
                    assert len(picked) == count
                    store(session, picked, first=len(given_out))
                    given_out += picked
                with pytest.raises(PoolExhausted, match=f"no free address left in {subnet}"):
                    pick_addresses(session, "f", settings_, 1)
                # Another fleet's clients do not use up this fleet's pool.
                assert len(pick_addresses(session, "other", settings_, pool)) == pool
        finally:
            engine.dispose()

    assert len(given_out) == pool
    assert set(given_out) == set(subnet) - {subnet.network_address, server}


def store(session: Session, addresses: list[IPv6Address], first: int) -> None:
    session.execute(
        insert(CLIENTS),
        [
            {
                "fleet": "f",
                "address": str(address),
                "public_key": f"key-{first + number}",
                "source_ip": "192.0.2.9",
                "registered_at": MOMENT,
                "last_seen": MOMENT,
                "last_active": MOMENT,
            }
            for number, address in enumerate(addresses)
        ],
    )
    session.commit()


# --- hostnames ---------------------------------------------------------------------------

# Few, partly long names, so that requests collide and numbered names get shortened.
NAMES = st.sampled_from(
    ["a", "a2", "a3", "ex", "ex2", "ex-2", "b" * 60, "b" * 61 + "2", "c" * 63, "c" * 62 + "2"]
)
SEPARATORS = st.sampled_from(["", "-", "--", "_x"])
CLIENT_COUNT = 5


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[int, str | None]]:
    """(client, requested name) pings; None for the client being pruned."""
    return draw(
        st.lists(
            st.tuples(st.integers(0, CLIENT_COUNT - 1), st.one_of(NAMES, NAMES, NAMES, st.none())),
            max_size=40,
        )
    )


def lowest_free(requested: str, separator: str, taken: set[str]) -> str:
    number = 2
    while numbered(requested, separator, number) in taken:
        number += 1
    return numbered(requested, separator, number)


@settings(PROPERTIES, max_examples=150)
@given(steps=operations(), separator=SEPARATORS)
def test_choose_hostname_keeps_names_unique_valid_and_stable(
    steps: list[tuple[int, str | None]], separator: str
) -> None:
    # The model: client → (assigned name, requested name); absent once pruned.
    held: dict[int, tuple[str, str]] = {}
    for client, requested in steps:
        if requested is None:
            held.pop(client, None)
            continue
        current, current_request = held.get(client, (None, None))
        taken = {name for other, (name, _) in held.items() if other != client}

        assigned = choose_hostname(
            requested,
            current=current,
            current_request=current_request,
            taken=taken,
            separator=separator,
        )

        assert assigned not in taken
        assert len(assigned) <= MAX_LENGTH
        assert HOSTNAME.fullmatch(assigned)
        if requested not in taken:  # rule 1: a free requested name is granted
            assert assigned == requested
        elif current_request == requested and current is not None:  # rule 2: no renumbering
            assert assigned == current
        else:  # rule 3: the lowest free number
            assert assigned == lowest_free(requested, separator, taken)
        held[client] = (assigned, requested)

        # Asking again at once changes nothing (no flapping).
        again = choose_hostname(
            requested, current=assigned, current_request=requested, taken=taken, separator=separator
        )
        assert again == assigned

    names = [name for name, _ in held.values()]
    assert len(names) == len(set(names))


@PROPERTIES
@given(
    requested=st.from_regex(HOSTNAME, fullmatch=True),
    separator=SEPARATORS,
    number=st.integers(2, 9_999_999),
)
def test_every_numbered_form_shares_the_search_prefix(
    requested: str, separator: str, number: int
) -> None:
    """The database is searched by this prefix for names that could collide."""
    prefix = search_prefix(requested, separator)
    name = numbered(requested, separator, number)
    assert requested.startswith(prefix)
    assert name.startswith(prefix)
    assert len(name) <= MAX_LENGTH
    assert HOSTNAME.fullmatch(name)

"""reconcile.py: planning peer changes from one dump, judging an interface against its
config, and finding (never silently deleting) rows outside an edited subnet."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv6Interface, IPv6Network
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config import FleetConfig
from database import Client, Database
from reconcile import (
    PeerPlan,
    find_orphans,
    interface_differences,
    plan_peers,
    remove_orphans,
)
from wireguard import InterfaceDump, LinkState, PeerStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
KEY_A, KEY_B, KEY_C, KEY_D = (base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2, 3, 4))
ADDR_A, ADDR_B, ADDR_C = (f"fd00:1::{n}" for n in ("a", "b", "c"))


def peer(key: str, *allowed: str) -> PeerStatus:
    return PeerStatus(key, None, ",".join(allowed), 0)


def dump(*peers: PeerStatus) -> InterfaceDump:
    return InterfaceDump("serverpublic=", 51820, {p.public_key: p for p in peers})


# --- plan_peers --------------------------------------------------------------------------


def test_all_good_is_empty() -> None:
    plan = plan_peers(
        {KEY_A: ADDR_A, KEY_B: ADDR_B},
        dump(peer(KEY_A, f"{ADDR_A}/128"), peer(KEY_B, f"{ADDR_B}/128")),
    )
    assert plan == PeerPlan(remove=(), add=())
    assert plan.empty


def test_nothing_wanted_nothing_there_is_empty() -> None:
    assert plan_peers({}, dump()).empty


def test_missing_peers_are_added_sorted() -> None:
    plan = plan_peers(
        {KEY_C: ADDR_C, KEY_A: ADDR_A, KEY_B: ADDR_B}, dump(peer(KEY_B, f"{ADDR_B}/128"))
    )
    assert plan == PeerPlan(remove=(), add=((KEY_A, ADDR_A), (KEY_C, ADDR_C)))
    assert not plan.empty


def test_unknown_peers_are_removed_sorted() -> None:
    plan = plan_peers(
        {KEY_B: ADDR_B},
        dump(peer(KEY_D, "fd00:1::d/128"), peer(KEY_B, f"{ADDR_B}/128"), peer(KEY_A)),
    )
    assert plan == PeerPlan(remove=(KEY_A, KEY_D), add=())
    assert not plan.empty


@pytest.mark.parametrize(
    "allowed",
    [
        ("fd00:1::b/128",),  # another client's address
        ("fd00:1::a/64",),  # right address, wrong prefix
        ("fd00:1::a/128", "10.0.0.1/32"),  # extended beyond its address
        (),  # none at all
    ],
)
def test_wrong_allowed_ips_are_set_back_in_place(allowed: tuple[str, ...]) -> None:
    plan = plan_peers({KEY_A: ADDR_A}, dump(peer(KEY_A, *allowed)))
    assert plan == PeerPlan(remove=(), add=(), fix=((KEY_A, ADDR_A),))
    assert not plan.empty


def test_mixed_plan() -> None:
    plan = plan_peers(
        {KEY_A: ADDR_A, KEY_B: ADDR_B, KEY_C: ADDR_C},
        dump(
            peer(KEY_D, "fd00:1::d/128"),  # unknown
            peer(KEY_C, "fd00:1::99/128"),  # wrong
            peer(KEY_B, f"{ADDR_B}/128"),  # good
        ),  # KEY_A missing
    )
    assert plan.remove == (KEY_D,)
    assert plan.add == ((KEY_A, ADDR_A),)
    assert plan.fix == ((KEY_C, ADDR_C),)


# --- delete_outside_subnet ---------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(str(tmp_path / "clients.db"))
    db.migrate()
    yield db
    db.close()


def row(fleet: str, address: str) -> Client:
    return Client(
        fleet=fleet,
        address=address,
        public_key=f"{fleet}-{address}",
        source_ip="192.0.2.50",
        registered_at=NOW,
        last_seen=NOW,
        last_active=NOW,
    )


async def insert_rows(database: Database, rows: list[Client]) -> None:
    def insert(session: Session) -> None:
        session.add_all(rows)
        session.commit()

    await database.write(insert)


async def test_find_orphans_finds_rows_outside_the_subnet_and_deletes_nothing(
    database: Database,
) -> None:
    await insert_rows(
        database,
        [
            row("alpha", "fd00:1::2"),
            row("alpha", "fd00:1::ffff:ffff:ffff:ffff"),  # last address of the /64: inside
            row("alpha", "fd00:9::3"),
            row("alpha", "fd00:1:0:1::2"),  # next /64: outside
            row("beta", "fd00:9::4"),  # a fleet not asked about: not this call's business
        ],
    )
    orphans = await database.read(
        lambda session: find_orphans(session, {"alpha": IPv6Network("fd00:1::/64")})
    )
    assert [o.address for o in orphans] == ["fd00:1:0:1::2", "fd00:9::3"]
    assert {o.fleet for o in orphans} == {"alpha"}
    count = await database.read(lambda session: len(session.scalars(select(Client.id)).all()))
    assert count == 5


async def test_remove_orphans_deletes_exactly_those(database: Database) -> None:
    await insert_rows(database, [row("alpha", "fd00:1::2"), row("alpha", "fd00:9::3")])
    subnets = {"alpha": IPv6Network("fd00:1::/64")}
    orphans = await database.read(lambda session: find_orphans(session, subnets))
    assert await database.write(lambda session: remove_orphans(session, orphans)) == 1
    left = await database.read(
        lambda session: sorted(session.scalars(select(Client.address)).all())
    )
    assert left == ["fd00:1::2"]
    assert await database.read(lambda session: find_orphans(session, subnets)) == []


# --- interface_differences -----------------------------------------------------------------

SETTINGS = FleetConfig.model_validate(
    {"ip6": "fd00:1::1", "subnet": "fd00:1::/64", "external_ip": "192.0.2.1", "port": 51820}
)
GOOD_LINK = LinkState(True, frozenset({IPv6Interface("fd00:1::1/64")}))
GOOD_DUMP = InterfaceDump("serverpublic=", 51820, {})


def whats(link: LinkState | None, dump_: InterfaceDump | None) -> list[str]:
    found = interface_differences("wg_alpha", SETTINGS, "serverpublic=", link, dump_)
    return [difference.what for difference in found]


def test_a_matching_interface_has_no_differences() -> None:
    assert whats(GOOD_LINK, GOOD_DUMP) == []


def test_a_missing_interface_is_one_difference() -> None:
    found = interface_differences("wg_alpha", SETTINGS, "serverpublic=", None, None)
    assert [(d.what, d.text) for d in found] == [("interface", "interface wg_alpha does not exist")]


def test_a_link_set_down_has_lost_its_address_too() -> None:
    assert whats(LinkState(False, frozenset()), GOOD_DUMP) == ["link", "address"]


@pytest.mark.parametrize(
    "addresses",
    [
        set(),
        {"fd00:1::1/128"},  # the right address with the wrong prefix length
        {"fd00:1::2/64"},
    ],
)
def test_the_address_must_be_there_with_its_prefix(addresses: set[str]) -> None:
    link = LinkState(True, frozenset(IPv6Interface(a) for a in addresses))
    assert whats(link, GOOD_DUMP) == ["address"]


def test_port_and_key_are_judged_from_the_dump() -> None:
    found = interface_differences(
        "wg_alpha", SETTINGS, "serverpublic=", GOOD_LINK, InterfaceDump("other=", 40000, {})
    )
    assert [d.text for d in found] == [
        "interface wg_alpha listens on port 40000, not 51820",
        "interface wg_alpha has another key than its config file",
    ]
    assert whats(GOOD_LINK, None) == []  # not read: not judged

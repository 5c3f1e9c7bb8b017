"""reconcile.py: planning peer changes from one dump, and dropping rows outside the subnet."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv6Network
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from database import Client, Database
from reconcile import PeerPlan, delete_outside_subnet, plan_peers
from wireguard import InterfaceDump, PeerStatus

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
def test_wrong_allowed_ips_are_removed_and_added(allowed: tuple[str, ...]) -> None:
    plan = plan_peers({KEY_A: ADDR_A}, dump(peer(KEY_A, *allowed)))
    assert plan == PeerPlan(remove=(KEY_A,), add=((KEY_A, ADDR_A),))


def test_mixed_plan() -> None:
    plan = plan_peers(
        {KEY_A: ADDR_A, KEY_B: ADDR_B, KEY_C: ADDR_C},
        dump(
            peer(KEY_D, "fd00:1::d/128"),  # unknown
            peer(KEY_C, "fd00:1::99/128"),  # wrong
            peer(KEY_B, f"{ADDR_B}/128"),  # good
        ),  # KEY_A missing
    )
    assert plan.remove == (KEY_C, KEY_D)
    assert plan.add == ((KEY_A, ADDR_A), (KEY_C, ADDR_C))


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


async def test_delete_outside_subnet(database: Database) -> None:
    rows = [
        row("alpha", "fd00:1::2"),
        row("alpha", "fd00:1::ffff:ffff:ffff:ffff"),  # last address of the /64: inside
        row("alpha", "fd00:9::3"),
        row("alpha", "fd00:1:0:1::2"),  # next /64: outside
        row("beta", "fd00:9::4"),  # other fleet: not this call's business
    ]

    def insert(session: Session) -> None:
        session.add_all(rows)
        session.commit()

    await database.write(insert)
    deleted = await database.write(
        lambda session: delete_outside_subnet(session, "alpha", IPv6Network("fd00:1::/64"))
    )
    assert deleted == ["fd00:1:0:1::2", "fd00:9::3"]
    left = await database.read(
        lambda session: sorted(
            (fleet, address)
            for fleet, address in session.execute(select(Client.fleet, Client.address))
        )
    )
    assert left == [
        ("alpha", "fd00:1::2"),
        ("alpha", "fd00:1::ffff:ffff:ffff:ffff"),
        ("beta", "fd00:9::4"),
    ]


async def test_delete_outside_subnet_with_nothing_to_do(database: Database) -> None:
    def insert(session: Session) -> None:
        session.add(row("alpha", "fd00:1::2"))
        session.commit()

    await database.write(insert)
    deleted = await database.write(
        lambda session: delete_outside_subnet(session, "alpha", IPv6Network("fd00:1::/64"))
    )
    assert deleted == []
    count = await database.read(lambda session: len(session.scalars(select(Client.id)).all()))
    assert count == 1

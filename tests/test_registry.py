"""Group-committed registration: batches, atomicity per batch, max_clients."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

import pytest
from sqlalchemy import select

import registry
from database import Client
from registry import Hint, _Request, store_batch
from tests.conftest import FLEET
from tests.fakes import FakeWireGuard
from wireguard import generate_keypair

pytestmark = pytest.mark.both_backends

StartApp = Callable[..., Any]


async def test_concurrent_registrations_share_transactions_and_wg_calls(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running, running.client() as http:
        fake_wg.calls.clear()
        answers = await asyncio.gather(*(http.post(f"/fleet/{FLEET}/register") for _ in range(100)))
        stored = await running.context.database.read(
            lambda s: s.scalars(select(Client.address)).all()
        )
    assert [a.status_code for a in answers] == [200] * 100
    addresses = {a.json()["address"] for a in answers}
    assert len(addresses) == 100
    assert set(stored) == addresses
    assert len(fake_wg.interfaces["wg_alpha"].peers) == 100
    assert fake_wg.count("wg", "addconf") < 100  # batched, not one process per client


async def test_a_failing_wg_fails_the_whole_batch_and_leaves_nothing(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running, running.client() as http:
        fake_wg.fail = {"addconf"}
        answers = await asyncio.gather(*(http.post(f"/fleet/{FLEET}/register") for _ in range(20)))
        stored = await running.context.database.read(lambda s: s.scalars(select(Client)).all())
    assert {a.status_code for a in answers} == {503}
    assert stored == []
    assert fake_wg.interfaces["wg_alpha"].peers == {}


async def test_max_clients_is_enforced_with_a_sentence(
    start_app: StartApp, make_config: Callable[..., Any]
) -> None:
    config = make_config()
    small = config.fleets[FLEET].model_copy(update={"max_clients": 3})
    config = config.model_copy(update={"fleets": {**config.fleets, FLEET: small}})
    async with start_app(config) as running, running.client() as http:
        answers = await asyncio.gather(*(http.post(f"/fleet/{FLEET}/register") for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 503, 503]
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.json() == {
        "detail": "Fleet alpha has reached its limit of 3 clients (max_clients); "
        "try again once inactive clients are pruned."
    }


async def test_the_same_key_twice_in_one_batch_gets_one_address(start_app: StartApp) -> None:
    key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
    async with start_app() as running, running.client() as http:
        answers = await asyncio.gather(
            *(http.post(f"/fleet/{FLEET}/register", json={"public_key": key}) for _ in range(5))
        )
        stored = await running.context.database.read(lambda s: s.scalars(select(Client)).all())
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["address"] for a in answers}) == 1
    assert len(stored) == 1


async def test_a_stale_roster_hint_is_retried_against_the_database(
    start_app: StartApp, clock: Any
) -> None:
    """The roster's addresses are only a hint: one already taken makes the UNIQUE
    constraint refuse the batch, which is then stored with addresses from the database."""
    async with start_app() as running, running.client() as http:
        taken = (await http.post(f"/fleet/{FLEET}/register")).json()["address"]
        settings = running.context.config.fleets[FLEET]
        loop = asyncio.get_running_loop()
        request = _Request(generate_keypair().public_key, "192.0.2.9", loop.create_future())
        stale = Hint(clients=0, addresses={request.public_key: IPv6Address(taken)})
        outcomes = await running.context.database.write(
            lambda session: store_batch(session, FLEET, settings, [request], clock(), stale)
        )
        rows = await running.context.database.read(
            lambda s: s.execute(select(Client.address, Client.public_key)).all()
        )
    assert len(outcomes) == 1
    address, created = outcomes[0]  # type: ignore[misc]
    assert created
    assert str(address) != taken
    assert len(rows) == 2
    assert (str(address), request.public_key) in rows


async def test_registration_takes_addresses_from_the_roster_without_counting(
    start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far from max_clients the roster's count stands in for a COUNT over the fleet."""
    counted = []
    real_count = registry.count_clients
    monkeypatch.setattr(
        registry, "count_clients", lambda *args: counted.append(1) or real_count(*args)
    )
    async with start_app() as running, running.client() as http:
        answers = await asyncio.gather(*(http.post(f"/fleet/{FLEET}/register") for _ in range(10)))
        assert running.context.roster.size(FLEET) == 10
    assert {a.status_code for a in answers} == {200}
    assert counted == []


async def test_peers_added_early_with_a_stale_address_end_up_as_stored(
    start_app: StartApp, fake_wg: FakeWireGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generated key's peer goes to the interface while its row is stored; when the
    roster's address was taken after all, the interface ends up with the stored one."""
    async with start_app() as running, running.client() as http:
        taken = (await http.post(f"/fleet/{FLEET}/register")).json()["address"]
        running.context.roster.remove(FLEET, [taken])  # the roster no longer knows it
        real = registry.random_candidates
        monkeypatch.setattr(
            registry,
            "random_candidates",
            lambda subnet, server, count: [IPv6Address(taken), *real(subnet, server, count)],
        )
        answer = await http.post(f"/fleet/{FLEET}/register")
        rows = await running.context.database.read(
            lambda s: dict(s.execute(select(Client.public_key, Client.address)).all())
        )
    assert answer.status_code == 200
    assert answer.json()["address"] != taken
    assert len(rows) == 2
    peers = fake_wg.interfaces["wg_alpha"].peers
    assert peers == {key: f"{address}/128" for key, address in rows.items()}


async def test_a_failing_early_add_leaves_nothing(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running, running.client() as http:
        await http.post(f"/fleet/{FLEET}/register")
        fake_wg.fail = {"addconf"}
        answers = await asyncio.gather(*(http.post(f"/fleet/{FLEET}/register") for _ in range(8)))
        stored = await running.context.database.read(lambda s: s.scalars(select(Client)).all())
    assert {a.status_code for a in answers} == {503}
    assert len(stored) == 1
    assert set(fake_wg.interfaces["wg_alpha"].peers) == {stored[0].public_key}

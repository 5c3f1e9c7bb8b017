"""Write-behind pings: answered at once, stored within a second, never losing to a prune."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

import pruning
from database import Client
from tests.conftest import FLEET, Running
from tests.fakes import FakeClock

pytestmark = pytest.mark.both_backends

StartApp = Callable[..., Any]


async def register(running: Running) -> str:
    async with running.client() as http:
        response = await http.post(f"/fleet/{FLEET}/register")
    assert response.status_code == 200
    address: str = response.json()["address"]
    return address


async def last_seen(running: Running, address: str) -> datetime | None:
    return await running.context.database.read(
        lambda s: s.scalar(select(Client.last_seen).where(Client.address == address))
    )


async def test_a_plain_ping_is_buffered_and_stored_by_the_flush(
    start_app: StartApp, clock: FakeClock
) -> None:
    async with start_app() as running:
        address = await register(running)
        registered = clock.now
        clock.advance(minutes=1)
        async with running.in_tunnel(address) as tunnel:
            response = await tunnel.post(f"/fleet/{FLEET}/ping", json={})
        assert response.status_code == 200
        assert await last_seen(running, address) == registered  # not yet written
        await running.context.activity.flush()
        assert await last_seen(running, address) == clock.now


async def test_shutdown_stores_pending_ping_times(
    start_app: StartApp, clock: FakeClock, make_config: Callable[..., Any]
) -> None:
    config = make_config()
    async with start_app(config) as running:
        address = await register(running)
        clock.advance(minutes=1)
        async with running.in_tunnel(address) as tunnel:
            await tunnel.post(f"/fleet/{FLEET}/ping", json={})
    async with start_app(config) as running:
        assert await last_seen(running, address) == clock.now


async def test_a_buffered_ping_saves_its_client_from_the_next_prune(
    start_app: StartApp, clock: FakeClock
) -> None:
    async with start_app(prune_timeout="10m") as running:
        address = await register(running)
        clock.advance(minutes=9)
        async with running.in_tunnel(address) as tunnel:
            await tunnel.post(f"/fleet/{FLEET}/ping", json={})
        clock.advance(minutes=2)  # 11 min after registration, 2 min after the ping
        report = await pruning.sweep_fleet(running.context, FLEET)
        assert report.pruned == 0
        assert await last_seen(running, address) is not None


async def test_pings_during_a_sweep_are_committed_directly(
    start_app: StartApp, clock: FakeClock
) -> None:
    async with start_app() as running:
        address = await register(running)
        clock.advance(minutes=1)
        with running.context.activity.committing_directly(FLEET):
            async with running.in_tunnel(address) as tunnel:
                response = await tunnel.post(f"/fleet/{FLEET}/ping", json={})
            assert response.status_code == 200
            assert await last_seen(running, address) == clock.now

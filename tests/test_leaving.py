"""POST /fleet/{fleet}/leave: a client removes itself at once, identified like a ping."""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import leaving
from admin_auth import hash_password
from database import Client
from tests.conftest import FLEET, Running
from tests.fakes import FakeWireGuard

pytestmark = pytest.mark.both_backends

StartApp = Callable[..., Any]


@pytest.fixture(autouse=True)
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leaving, "PEER_GRACE", 0.0)


async def register(running: Running) -> dict[str, Any]:
    async with running.client() as http:
        response = await http.post(f"/fleet/{FLEET}/register")
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


async def rows(running: Running) -> list[tuple[str, str | None]]:
    return await running.context.database.read(
        lambda s: [tuple(r) for r in s.execute(select(Client.address, Client.hostname))]
    )


async def test_leave_removes_the_client_everywhere_at_once(
    start_app: StartApp, fake_wg: FakeWireGuard, tmp_path: Path
) -> None:
    targets = tmp_path / "targets.json"
    async with start_app(prometheus_targets_file=str(targets)) as running:
        leaver, stayer = await register(running), await register(running)
        for client, name in ((leaver, "t42"), (stayer, "t7")):
            async with running.in_tunnel(client["address"]) as tunnel:
                await tunnel.post(f"/fleet/{FLEET}/ping", json={"hostname": name})
        hosts = running.context.config.hosts_file
        assert "t42.alpha.fleet.test" in hosts.read_text()

        async with running.in_tunnel(leaver["address"]) as tunnel:
            response = await tunnel.post(f"/fleet/{FLEET}/leave", json={})
            again = await tunnel.post(f"/fleet/{FLEET}/leave", json={})
        assert response.status_code == 200
        assert response.json() == {"status": "left"}
        assert await rows(running) == [(stayer["address"], "t7")]
        assert fake_wg.interfaces["wg_alpha"].peers == {
            stayer["public_key"]: f"{stayer['address']}/128"
        }
        assert hosts.read_text() == f"{stayer['address']} t7.alpha.fleet.test\n"
        assert [g["targets"] for g in json.loads(targets.read_text())] == [
            [f"[{stayer['address']}]:9100"]
        ]
        assert running.context.roster.find(FLEET, leaver["address"]) is None
        assert again.status_code == 404

        # The name is free: the next machine asking for it gets it unnumbered.
        newcomer = await register(running)
        async with running.in_tunnel(newcomer["address"]) as tunnel:
            named = await tunnel.post(f"/fleet/{FLEET}/ping", json={"hostname": "t42"})
        assert named.json()["hostname"] == "t42"


async def test_leave_is_identified_like_a_ping(start_app: StartApp) -> None:
    async with start_app() as running:
        client = await register(running)
        # Not through the tunnel: from outside the subnet, or not to the fleet's address.
        async with running.client(client["address"]) as wrong_server:
            to_elsewhere = await wrong_server.post(f"/fleet/{FLEET}/leave", json={})
        async with running.in_tunnel("fd00:2::5") as outside:
            from_outside = await outside.post(f"/fleet/{FLEET}/leave", json={})
        async with running.in_tunnel("fd00:1::9999") as stranger:
            unknown = await stranger.post(f"/fleet/{FLEET}/leave", json={})
        async with running.in_tunnel(client["address"]) as tunnel:
            with_body = await tunnel.post(f"/fleet/{FLEET}/leave", json={"hostname": "x"})
            no_fleet = await tunnel.post("/fleet/nope/leave", json={})
        assert [len(await rows(running))] == [1]
    assert to_elsewhere.status_code == 403
    assert from_outside.status_code == 403
    assert unknown.status_code == 404
    assert with_body.status_code == 422
    assert no_fleet.status_code == 404


async def test_a_spoofed_forwarded_header_cannot_make_another_client_leave(
    start_app: StartApp,
) -> None:
    async with start_app() as running:
        victim, attacker = await register(running), await register(running)
        async with running.in_tunnel(attacker["address"]) as tunnel:
            response = await tunnel.post(
                f"/fleet/{FLEET}/leave",
                json={},
                headers={"X-Forwarded-For": victim["address"]},
            )
        remaining = await rows(running)
    assert response.status_code == 200
    assert [address for address, _ in remaining] == [victim["address"]]


async def test_leave_needs_no_admin_password(start_app: StartApp) -> None:
    admin = {"username": "admin", "password_hash": hash_password("pw")}
    async with start_app(admin=admin) as running:
        client = await register(running)
        async with running.in_tunnel(client["address"]) as tunnel:
            response = await tunnel.post(f"/fleet/{FLEET}/leave", json={})
    assert response.status_code == 200


async def test_a_key_registered_again_before_the_peer_goes_keeps_its_peer(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running:
        client = await register(running)
        removal = await leaving.leave_fleet(running.context, FLEET, IPv6Address(client["address"]))
        async with running.client() as http:
            again = await http.post(
                f"/fleet/{FLEET}/register", json={"public_key": client["public_key"]}
            )
        await removal()
        assert client["public_key"] in fake_wg.interfaces["wg_alpha"].peers
    assert again.status_code == 200

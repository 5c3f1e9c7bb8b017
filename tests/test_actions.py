"""actions.py and bans.py: removing clients, bans, and the dashboard's remove buttons."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from database import Client
from tests.conftest import FLEET, Running
from tests.fakes import FakeWireGuard
from tests.test_access import PASSWORD, basic, password_hash  # noqa: F401 - a fixture
from tests.test_events import events, kinds, ping, register

StartApp = Callable[..., Any]
KEY = "GmEpGkUqf5Y3lkOgwNRs0gA93hqfmzVgIlEXwcrfixA="
ADMIN = basic("admin", PASSWORD)


@pytest.fixture
def admin(password_hash: str) -> dict[str, str]:  # noqa: F811 - the fixture
    return {"username": "admin", "password_hash": password_hash}


def admin_client(running: Running) -> httpx.AsyncClient:
    http = running.client()
    http.headers.update(ADMIN)
    return http


async def addresses(running: Running) -> list[str]:
    return await running.context.database.read(
        lambda s: list(s.scalars(select(Client.address).where(Client.fleet == FLEET)))
    )


async def test_without_admin_every_action_is_refused(start_app: StartApp) -> None:
    async with start_app() as running, running.client() as http:
        client = await register(running)
        removal = await http.delete(f"/api/fleets/{FLEET}/clients/{client['address']}")
        bans = await http.get("/api/bans")
        unban = await http.delete("/api/bans", params={"public_key": KEY})
        page = await http.get(f"/fleet/{FLEET}/clients/{client['address']}/remove")
        left = await addresses(running)
    for response in (removal, bans, unban):
        assert response.status_code == 403
        assert "no `admin` password is configured" in response.json()["detail"]
    assert page.status_code == 403
    assert left == [client["address"]]


async def test_remove_is_gone_everywhere_at_once(
    start_app: StartApp, admin: dict[str, str], fake_wg: FakeWireGuard
) -> None:
    async with start_app(admin=admin) as running, admin_client(running) as http:
        gone, kept = await register(running), await register(running)
        await ping(running, gone["address"], "excavator")
        await ping(running, kept["address"], "digger")
        anonymous = await running.client().delete(f"/api/fleets/{FLEET}/clients/{gone['address']}")
        response = await http.delete(f"/api/fleets/{FLEET}/clients/{gone['address']}")
        again = await http.delete(f"/api/fleets/{FLEET}/clients/{gone['address']}")
        left = await addresses(running)
        log = await http.get("/api/events", params={"type": "removed"})
        hosts = running.context.config.hosts_file.read_text()
        # It may register again: only a ban refuses it.
        back = await running.client().post(
            f"/fleet/{FLEET}/register", json={"public_key": gone["public_key"]}
        )
    assert anonymous.status_code == 401
    assert response.status_code == 200
    assert response.json() == {"status": "removed"}
    assert again.status_code == 404
    assert left == [kept["address"]]
    assert "excavator" not in hosts
    assert "digger" in hosts
    assert [(e["address"], e["hostname"]) for e in log.json()["events"]] == [
        (gone["address"], "excavator")
    ]
    assert back.status_code == 200


async def test_the_peer_leaves_the_interface(
    start_app: StartApp, admin: dict[str, str], fake_wg: FakeWireGuard
) -> None:
    async with start_app(admin=admin) as running, admin_client(running) as http:
        client = await register(running)
        assert client["public_key"] in fake_wg.interfaces[f"wg_{FLEET}"].peers
        await http.delete(f"/api/fleets/{FLEET}/clients/{client['address']}")
    assert client["public_key"] not in fake_wg.interfaces[f"wg_{FLEET}"].peers


async def test_a_ban_refuses_registration_until_lifted(
    start_app: StartApp, admin: dict[str, str]
) -> None:
    async with start_app(admin=admin) as running, admin_client(running) as http:
        client = await register(running, public_key=KEY)
        removal = await http.delete(
            f"/api/fleets/{FLEET}/clients/{client['address']}", params={"ban": "true"}
        )
        refused = await http.post(f"/fleet/{FLEET}/register", json={"public_key": KEY})
        elsewhere = await http.post("/fleet/beta/register", json={"public_key": KEY})
        others = await http.post(f"/fleet/{FLEET}/register")
        bans = await http.get("/api/bans")
        lifted = await http.delete("/api/bans", params={"public_key": KEY})
        twice = await http.delete("/api/bans", params={"public_key": KEY})
        allowed = await http.post(f"/fleet/{FLEET}/register", json={"public_key": KEY})
        log = await events(running)
    assert removal.json() == {"status": "removed"}
    assert refused.status_code == elsewhere.status_code == 403
    assert refused.json()["detail"] == (
        "This public key is banned: its client was removed by an administrator. "
        "Ask the operator to lift the ban."
    )
    assert others.status_code == 200
    [ban] = bans.json()["bans"]
    assert (ban["public_key"], ban["fleet"], ban["address"]) == (KEY, FLEET, client["address"])
    assert lifted.json() == {"status": "unbanned"}
    assert twice.status_code == 404
    assert allowed.status_code == 200
    assert [kind for kind, _ in kinds(log)] == [
        "registered",
        "removed",
        "banned",
        "registered",
        "registered",
    ]


def form_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))


async def test_dashboard_removal_needs_confirmation_and_a_token(
    start_app: StartApp, admin: dict[str, str]
) -> None:
    async with start_app(admin=admin) as running, admin_client(running) as http:
        client = await register(running, public_key=KEY)
        address = client["address"]
        fleet_page = await http.get(f"/fleet/{FLEET}")
        confirm = await http.get(f"/fleet/{FLEET}/clients/{address}/remove?ban=true")
        fields = form_fields(confirm.text)
        forged = await http.post(
            f"/fleet/{FLEET}/clients/{address}/remove",
            data={"csrf": "0" * 64, "ban": "true"},
        )
        still = await addresses(running)
        done = await http.post(f"/fleet/{FLEET}/clients/{address}/remove", data=fields)
        bans = await http.get("/api/bans")
        left = await addresses(running)
    assert f"/fleet/{FLEET}/clients/{address}/remove?ban=true" in fleet_page.text
    assert confirm.status_code == 200
    assert fields["ban"] == "true"
    assert forged.status_code == 403
    assert still == [address]
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"/fleet/{FLEET}?")
    assert left == []
    assert [b["public_key"] for b in bans.json()["bans"]] == [KEY]


async def test_the_dashboard_shows_no_actions_without_admin(start_app: StartApp) -> None:
    async with start_app() as running, running.client() as http:
        await register(running)
        page = await http.get(f"/fleet/{FLEET}")
    assert "/remove" not in page.text

"""events.py, history.py and the events the registry, pings and the pass record."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, select, text

import leaving
from database import Client, Database
from events import Event
from migrations import alembic_config, upgrade
from pruning import sweep_all
from tests.conftest import FLEET, Running
from tests.fakes import FakeClock, FakeWireGuard
from tests.test_access import PASSWORD, basic, password_hash  # noqa: F401 - a fixture

StartApp = Callable[..., Any]


async def register(running: Running, **body: str) -> dict[str, Any]:
    async with running.client() as http:
        response = await http.post(f"/fleet/{FLEET}/register", json=body or None)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def ping(running: Running, address: str, hostname: str | None = None) -> None:
    async with running.in_tunnel(address) as http:
        response = await http.post(
            f"/fleet/{FLEET}/ping", json={} if hostname is None else {"hostname": hostname}
        )
    assert response.status_code == 200, response.text


async def events(running: Running, query: str = "") -> dict[str, Any]:
    async with running.client() as http:
        response = await http.get(f"/api/events{query}", headers=basic("admin", PASSWORD))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def kinds(body: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(event["type"], event["detail"]) for event in body["events"]]


def handshake(fake_wg: FakeWireGuard, key: str, clock: FakeClock, ago: float = 10) -> None:
    moment = clock.now - timedelta(seconds=ago)
    fake_wg.interfaces[f"wg_{FLEET}"].handshakes[key] = int(moment.timestamp())


async def test_a_client_life_is_told_in_order(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app(prune_timeout="10m") as running:
        client = await register(running)
        await ping(running, client["address"], "excavator")
        await ping(running, client["address"], "excavator")  # unchanged: no event
        handshake(fake_wg, client["public_key"], clock)
        await sweep_all(running.context)
        await sweep_all(running.context)  # still online: no second `online`
        clock.advance(minutes=4)
        await sweep_all(running.context)
        clock.advance(minutes=11)
        await sweep_all(running.context)
        body = await events(running)
    assert kinds(body) == [
        ("registered", {}),
        ("renamed", {"from": None, "to": "excavator"}),
        ("online", {}),
        ("offline", {}),
        ("pruned", {"reason": "inactive"}),
    ]
    ids = [event["id"] for event in body["events"]]
    assert ids == sorted(ids)
    assert body["last_id"] == ids[-1]
    first, last = body["events"][0], body["events"][-1]
    assert first["address"] == client["address"] == last["address"]
    assert first["public_key"] == client["public_key"]
    assert first["hostname"] is None
    assert last["hostname"] == "excavator"
    assert first["fleet"] == FLEET
    assert first["time"].endswith("Z")
    assert set(first) == {
        "id", "time", "type", "fleet", "node", "address", "public_key", "hostname", "detail"
    }  # fmt: skip


async def test_renaming_tells_from_and_to(start_app: StartApp) -> None:
    async with start_app() as running:
        one, two = await register(running), await register(running)
        await ping(running, one["address"], "excavator")
        await ping(running, two["address"], "excavator")
        await ping(running, two["address"], "digger")
        body = await events(running, "?type=renamed")
    assert kinds(body) == [
        ("renamed", {"from": None, "to": "excavator"}),
        ("renamed", {"from": None, "to": "excavator2"}),
        ("renamed", {"from": "excavator2", "to": "digger"}),
    ]


async def test_a_pruned_client_gets_no_offline_first(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    """Online at one pass, gone at the next: `pruned` only, no `offline` before it."""
    async with start_app(prune_timeout="2m") as running:
        client = await register(running)
        clock.advance(minutes=3)  # past the start-up grace
        handshake(fake_wg, client["public_key"], clock)
        await sweep_all(running.context)
        clock.advance(minutes=2, seconds=30)
        await sweep_all(running.context)
        body = await events(running)
    assert kinds(body) == [("registered", {}), ("online", {}), ("pruned", {"reason": "inactive"})]


async def test_online_is_not_told_twice_across_a_restart(
    start_app: StartApp, make_config: Callable[..., Any], fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    config = make_config()
    async with start_app(config) as running:
        client = await register(running)
        handshake(fake_wg, client["public_key"], clock)
        await sweep_all(running.context)
    async with start_app(config) as running:  # start-up runs a pass too
        await sweep_all(running.context)
        body = await events(running)
    assert kinds(body) == [("registered", {}), ("online", {})]


async def test_re_registering_the_same_key_is_no_new_event(start_app: StartApp) -> None:
    key = "GmEpGkUqf5Y3lkOgwNRs0gA93hqfmzVgIlEXwcrfixA="
    async with start_app() as running:
        await register(running, public_key=key)
        await register(running, public_key=key)
        body = await events(running)
    assert kinds(body) == [("registered", {})]


async def test_a_failed_registration_leaves_no_event(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running, running.client() as http:
        fake_wg.fail.add("addconf")
        response = await http.post(f"/fleet/{FLEET}/register")
        body = await events(running)
    assert response.status_code == 503
    assert body == {"events": [], "last_id": 0}


async def test_filters_and_paging(start_app: StartApp) -> None:
    async with start_app() as running:
        for _ in range(5):
            await register(running)
        async with running.client() as http:
            other = await http.post("/fleet/beta/register")
        assert other.status_code == 200
        page = await events(running, f"?fleet={FLEET}&limit=2")
        rest = await events(running, f"?fleet={FLEET}&after={page['last_id']}")
        empty = await events(running, f"?fleet={FLEET}&after={rest['last_id']}")
        beta = await events(running, "?fleet=beta&type=registered")
        none = await events(running, "?type=pruned&after=3")
        async with running.client() as http:
            too_many = await http.get("/api/events?limit=1001")
            bad_type = await http.get("/api/events?type=exploded")
    assert len(page["events"]) == 2
    assert len(rest["events"]) == 3
    assert page["last_id"] < rest["events"][0]["id"]
    assert empty == {"events": [], "last_id": rest["last_id"]}
    assert [e["fleet"] for e in beta["events"]] == ["beta"]
    assert none == {"events": [], "last_id": 3}
    assert too_many.status_code == 422
    assert bad_type.status_code == 422


async def test_events_need_the_admin_password(
    start_app: StartApp,
    password_hash: str,  # noqa: F811 - the fixture
) -> None:
    admin = {"username": "admin", "password_hash": password_hash}
    async with start_app(admin=admin) as running, running.client() as http:
        anonymous = await http.get("/api/events")
        allowed = await http.get("/api/events", headers=basic("admin", PASSWORD))
    assert anonymous.status_code == 401
    assert allowed.status_code == 200


async def test_old_events_are_deleted_by_the_pass(start_app: StartApp, clock: FakeClock) -> None:
    async with start_app(event_retention="1h", prune_timeout="1d") as running:
        await register(running)
        clock.advance(minutes=59)
        await sweep_all(running.context)
        kept = await events(running)
        clock.advance(minutes=2)
        await sweep_all(running.context)
        gone = await events(running)
    assert len(kept["events"]) == 1
    assert gone["events"] == []


async def test_the_fleet_page_shows_the_latest_events(start_app: StartApp) -> None:
    async with start_app() as running:
        client = await register(running)
        await ping(running, client["address"], "excavator")
        async with running.client() as http:
            page = await http.get(f"/fleet/{FLEET}")
    assert page.status_code == 200
    table = page.text.split('id="events"', 1)[1]
    assert "renamed" in table
    assert "registered" in table
    assert "to: excavator" in table
    assert table.index("renamed") < table.index("registered")  # newest first


async def test_a_new_server_key_is_key_changed(
    start_app: StartApp, make_config: Callable[..., Any], fake_wg: FakeWireGuard
) -> None:
    config = make_config()
    async with start_app(config) as running:
        old = running.context.server_keys[FLEET]
    # The server was rebuilt: its config file and its interface are gone.
    (config.wireguard_dir / f"wg_{FLEET}.conf").unlink()
    del fake_wg.interfaces[f"wg_{FLEET}"]
    async with start_app(config) as running:
        new = running.context.server_keys[FLEET]
        body = await events(running, "?type=key_changed")
    assert old != new
    assert kinds(body) == [("key_changed", {"from": old, "to": new})]
    assert body["events"][0]["public_key"] == new


@pytest.mark.parametrize("rows", [1])
async def test_event_rows_and_client_rows_agree(start_app: StartApp, rows: int) -> None:
    """Assert the database, not just the API: one registered event per client row."""
    async with start_app() as running:
        for _ in range(rows):
            await register(running)
        database = running.context.database
        clients = await database.read(lambda s: list(s.scalars(select(Client.public_key))))
        logged = await database.read(
            lambda s: list(s.scalars(select(Event.public_key).where(Event.type == "registered")))
        )
    assert sorted(clients) == sorted(k for k in logged if k)


async def test_leaving_is_left_and_nothing_else(
    start_app: StartApp,
    fake_wg: FakeWireGuard,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(leaving, "PEER_GRACE", 0.0)
    async with start_app() as running:
        client = await register(running)
        await ping(running, client["address"], "excavator")
        handshake(fake_wg, client["public_key"], clock)
        await sweep_all(running.context)
        async with running.in_tunnel(client["address"]) as tunnel:
            response = await tunnel.post(f"/fleet/{FLEET}/leave", json={})
        assert response.status_code == 200, response.text
        await sweep_all(running.context)
        body = await events(running)
    assert [kind for kind, _ in kinds(body)] == ["registered", "renamed", "online", "left"]
    left = body["events"][-1]
    assert (left["address"], left["hostname"]) == (client["address"], "excavator")


async def test_ids_are_never_reused_after_retention_empties_the_log(
    start_app: StartApp, clock: FakeClock
) -> None:
    async with start_app(event_retention="1h", prune_timeout="1d") as running:
        await register(running)
        before = (await events(running))["last_id"]
        clock.advance(hours=2)
        await sweep_all(running.context)
        assert (await events(running))["events"] == []
        await register(running)
        after = await events(running)
    assert after["events"][0]["id"] > before


@pytest.mark.both_backends
def test_migration_0003_upgrades_an_existing_database_and_downgrades(database_url: str) -> None:
    database = Database(database_url)
    try:
        upgrade(database.engine, "0002")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO clients (fleet, address, public_key, source_ip, registered_at,"
                    " last_seen, last_active) VALUES ('alpha', 'fd00:1::2', 'k', '192.0.2.1',"
                    " '2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
        database.migrate()
        with database.engine.connect() as connection:
            row = connection.execute(text("SELECT address, reported_online FROM clients")).one()
            tables = set(inspect(connection).get_table_names())
        config = alembic_config()
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        with database.engine.connect() as connection:
            after = set(inspect(connection).get_table_names())
            columns = {c["name"] for c in inspect(connection).get_columns("clients")}
            kept = connection.execute(text("SELECT address FROM clients")).scalar_one()
    finally:
        database.close()
    assert (row[0], bool(row[1])) == ("fd00:1::2", False)
    assert {"events", "bans", "webhook_cursors", "server_keys"} <= tables
    assert not {"events", "bans", "webhook_cursors", "server_keys"} & after
    assert "reported_online" not in columns
    assert kept == "fd00:1::2"

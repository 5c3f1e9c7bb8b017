"""Client labels: validation, replace/clear/keep through pings, storage on both backends,
the `?label=` filter, label groups (API and page) and the fleet page's labels."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, text

from database import Client, Database
from groups import count_groups
from labels import InvalidLabel, check_labels, parse_selector
from migrations import upgrade
from tests.conftest import FLEET, Running
from tests.fakes import FakeClock, FakeWireGuard

pytestmark = pytest.mark.both_backends

StartApp = Callable[..., Any]


# --- validation (pure) ----------------------------------------------------------------


def test_valid_labels_pass_unchanged() -> None:
    labels = {"site": "ucf", "team": "42", "a" * 32: "", "x_1": "é" * 128}
    assert check_labels(labels) == labels


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({"Site": "ucf"}, "'Site'"),
        ({"1site": "ucf"}, "'1site'"),
        ({"a" * 33: "x"}, "'" + "a" * 33 + "'"),
        ({"fleet": "x"}, "'fleet' is reserved"),
        ({"instance": "x"}, "'instance' is reserved"),
        ({"__meta": "x"}, "'__meta'"),
        ({"site": "x" * 129}, "'site': the value is longer than 128"),
        ({"site": "a\nb"}, "'site': the value must not hold control characters"),
        ({"site": "a\x7f"}, "'site': the value must not hold control"),
        ({"site": 42}, "'site': the value must be a string"),
        ({f"k{n}": "" for n in range(17)}, "at most 16 labels"),
    ],
)
def test_invalid_labels_are_named(labels: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidLabel, match=named.replace("(", r"\(")):
        check_labels(labels)


def test_a_selector_splits_at_the_first_colon() -> None:
    assert parse_selector("site:ucf") == ("site", "ucf")
    assert parse_selector("url:http://x") == ("url", "http://x")
    assert parse_selector("site:") == ("site", "")
    with pytest.raises(InvalidLabel, match="key:value"):
        parse_selector("site")


def test_groups_count_clients_and_online_per_value_null_last() -> None:
    members = [
        ({"site": "ucf"}, True),
        ({"site": "ucf"}, False),
        ({"site": "mit"}, True),
        (None, False),
        ({"team": "1"}, True),
    ]
    groups = count_groups(members, "site").model_dump()
    assert groups == {
        "label": "site",
        "groups": [
            {"value": "mit", "clients": 1, "online": 1},
            {"value": "ucf", "clients": 2, "online": 1},
            {"value": None, "clients": 2, "online": 1},
        ],
    }


# --- through the API --------------------------------------------------------------------


async def register(running: Running) -> str:
    async with running.client() as http:
        response = await http.post(f"/fleet/{FLEET}/register")
    assert response.status_code == 200
    address: str = response.json()["address"]
    return address


async def ping(running: Running, address: str, body: Any) -> Any:
    async with running.in_tunnel(address) as tunnel:
        return await tunnel.post(f"/fleet/{FLEET}/ping", json=body)


async def stored(running: Running, address: str) -> Any:
    return await running.context.database.read(
        lambda s: s.scalar(select(Client.labels).where(Client.address == address))
    )


async def test_labels_are_replaced_kept_and_cleared(start_app: StartApp, tmp_path: Any) -> None:
    async with start_app() as running:
        address = await register(running)
        first = await ping(running, address, {"hostname": "t42", "labels": {"site": "ucf"}})
        assert first.status_code == 200
        assert first.json() == {
            "status": "ok",
            "hostname": "t42",
            "fqdn": "t42.alpha.fleet.test",
            "labels": {"site": "ucf"},
        }
        assert await stored(running, address) == {"site": "ucf"}

        kept = await ping(running, address, {})
        assert kept.json()["labels"] == {"site": "ucf"}
        kept_named = await ping(running, address, {"hostname": "t42"})
        assert kept_named.json()["labels"] == {"site": "ucf"}

        replaced = await ping(running, address, {"labels": {"team": "42", "site": "mit"}})
        assert replaced.json()["labels"] == {"site": "mit", "team": "42"}
        assert replaced.json()["hostname"] == "t42"  # the name is untouched
        assert await stored(running, address) == {"site": "mit", "team": "42"}

        cleared = await ping(running, address, {"labels": {}})
        assert cleared.json()["labels"] == {}
        assert await stored(running, address) is None  # NULL: no labels


async def test_labels_survive_a_restart(start_app: StartApp, make_config: Any) -> None:
    config = make_config()
    async with start_app(config) as running:
        address = await register(running)
        await ping(running, address, {"labels": {"site": "ucf"}})
    async with start_app(config) as running:
        # Answered from the roster, which the start-up pass loads from the database.
        assert (await ping(running, address, {})).json()["labels"] == {"site": "ucf"}
        assert running.context.roster.find(FLEET, address).labels == {"site": "ucf"}


@pytest.mark.parametrize(
    ("labels", "detail"),
    [
        (
            {"Site": "x"},
            "Invalid request: labels: label 'Site': keys are 1 to 32 characters from a-z, "
            "0-9 and _, starting with a letter.",
        ),
        (
            {"node": "x"},
            "Invalid request: labels: label 'node' is reserved (fleet, hostname, node, "
            "address, job, instance and keys starting with __ are set by wg-fleet or "
            "Prometheus).",
        ),
        (
            {"site": "a\tb"},
            "Invalid request: labels: label 'site': the value must not hold control characters.",
        ),
        ({"site": 1}, "Invalid request: labels: label 'site': the value must be a string."),
        (["site"], "Invalid request: labels: Input should be a valid dictionary."),
    ],
)
async def test_invalid_labels_get_422_naming_the_label(
    start_app: StartApp, labels: Any, detail: str
) -> None:
    async with start_app() as running:
        address = await register(running)
        await ping(running, address, {"labels": {"site": "ucf"}})
        response = await ping(running, address, {"hostname": "t1", "labels": labels})
        assert response.status_code == 422
        assert response.json() == {"detail": detail}
        assert await stored(running, address) == {"site": "ucf"}  # nothing changed


async def test_labels_change_the_targets_file(start_app: StartApp, tmp_path: Any) -> None:
    targets = tmp_path / "targets.json"
    async with start_app(prometheus_targets_file=str(targets), node="east-1") as running:
        address = await register(running)
        await ping(running, address, {"hostname": "t42", "labels": {"team": "42", "site": "ucf"}})
    assert json.loads(targets.read_text()) == [
        {
            "targets": [f"[{address}]:9100"],
            "labels": {
                "fleet": FLEET,
                "hostname": "t42",
                "node": "east-1",
                "site": "ucf",
                "team": "42",
            },
        }
    ]


async def labelled_fleet(running: Running) -> dict[str, str]:
    """Four clients: t1 (ucf, online), t2 (ucf), t3 (mit), t4 (no labels)."""
    wanted = {
        "t1": {"site": "ucf", "room": "a"},
        "t2": {"site": "ucf", "room": "b"},
        "t3": {"site": "mit", "room": "a"},
        "t4": {},
    }
    addresses = {}
    for name, labels in wanted.items():
        address = await register(running)
        response = await ping(running, address, {"hostname": name, "labels": labels})
        assert response.status_code == 200
        addresses[name] = address
    return addresses


async def test_the_api_filters_by_every_label_given(start_app: StartApp) -> None:
    async with start_app() as running:
        await labelled_fleet(running)
        async with running.client() as http:

            async def names(query: str) -> list[str]:
                response = await http.get(f"/api/fleets/{FLEET}/clients?{query}")
                assert response.status_code == 200, response.text
                return [c["hostname"] for c in response.json()["clients"]]

            assert await names("label=site:ucf") == ["t1", "t2"]
            assert await names("label=site:ucf&label=room:a") == ["t1"]
            assert await names("label=room:a") == ["t1", "t3"]
            assert await names("label=site:nowhere") == []
            assert await names("label=site:ucf&q=t2") == ["t2"]
            paged = await http.get(f"/api/fleets/{FLEET}/clients?label=site:ucf&limit=1")
            after = paged.json()["next_cursor"]
            second = await http.get(
                f"/api/fleets/{FLEET}/clients?label=site:ucf&limit=1&cursor={after}"
            )
            assert [c["hostname"] for c in second.json()["clients"]] == ["t2"]
            full = await http.get(f"/api/fleets/{FLEET}/clients")
            bad = await http.get(f"/api/fleets/{FLEET}/clients?label=site")
    by_name = {c["hostname"]: c["labels"] for c in full.json()["clients"]}
    assert by_name == {
        "t1": {"room": "a", "site": "ucf"},
        "t2": {"room": "b", "site": "ucf"},
        "t3": {"room": "a", "site": "mit"},
        "t4": {},
    }
    assert bad.status_code == 422
    assert bad.json() == {
        "detail": "Invalid request: query.label.0: label filter 'site' must be written key:value."
    }


async def test_groups_count_each_value_with_online_clients(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app() as running:
        addresses = await labelled_fleet(running)
        keys = await running.context.database.read(
            lambda s: dict(s.execute(select(Client.address, Client.public_key)).all())
        )
        # t1 and t3 have a recent handshake on the interface.
        for name in ("t1", "t3"):
            key = keys[addresses[name]]
            fake_wg.interfaces["wg_alpha"].handshakes[key] = int(clock.now.timestamp()) - 30
        running.context.status._entries.clear()
        async with running.client() as http:
            response = await http.get(f"/api/fleets/{FLEET}/groups?label=site")
            page = await http.get(f"/fleet/{FLEET}/groups?label=site")
            default = await http.get(f"/fleet/{FLEET}/groups")
            missing = await http.get(f"/api/fleets/{FLEET}/groups")
            unknown = await http.get("/api/fleets/nope/groups?label=site")
            reserved = await http.get(f"/api/fleets/{FLEET}/groups?label=fleet")
    assert response.json() == {
        "label": "site",
        "groups": [
            {"value": "mit", "clients": 1, "online": 1},
            {"value": "ucf", "clients": 2, "online": 1},
            {"value": None, "clients": 1, "online": 0},
        ],
    }
    assert page.status_code == 200
    assert 'href="/fleet/alpha?label=site%3Aucf"' in page.text
    assert "(no site)" in page.text
    assert 'class="complete"' in page.text  # mit: 1 of 1 online
    assert "by <code>room</code>" in default.text  # the first key the clients carry
    assert missing.status_code == 422
    assert unknown.status_code == 404
    assert reserved.status_code == 422


async def test_the_fleet_page_shows_labels_and_filters_by_them(start_app: StartApp) -> None:
    async with start_app() as running:
        await labelled_fleet(running)
        async with running.client() as http:
            page = await http.get(f"/fleet/{FLEET}?label=site:ucf&limit=1")
            bad = await http.get(f"/fleet/{FLEET}?label=Site:ucf")
            # The form's empty "add a filter" box filters nothing.
            everyone = await http.get(f"/fleet/{FLEET}?q=&label=&sort=hostname")
    assert page.status_code == 200
    clients = page.text.split('id="events"')[0]  # the latest events name every client
    assert ">t1<" in clients
    assert ">t2<" not in clients
    assert ">t3<" not in clients
    assert "room=a" in page.text
    assert "site=ucf" in page.text
    # The pager keeps the filter.
    assert "&amp;label=site%3Aucf&amp;cursor=" in page.text
    assert bad.status_code == 422
    assert everyone.status_code == 200
    assert all(f">{name}<" in everyone.text for name in ("t1", "t2", "t3", "t4"))


async def test_migration_0002_adds_the_column_to_an_existing_database(
    database_url: str,
) -> None:
    database = Database(database_url)
    try:
        upgrade(database.engine, "0001")
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
            row = connection.execute(text("SELECT address, labels FROM clients")).one()
    finally:
        database.close()
    assert tuple(row) == ("fd00:1::2", None)

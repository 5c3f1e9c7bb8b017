"""The dashboard, the JSON API, /metrics and /health, against a seeded temp database."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from database import Client, Database
from listing import Sort
from pruning import sweep_all
from status import StatusCache
from tests.conftest import FLEET, Running
from tests.fakes import FakeClock, FakeWireGuard
from tests.test_listing import (
    T0,
    address,
    client_row,
    expected_order,
    insert,
    mixed_rows,
    public_key,
)

StartApp = Callable[..., Any]

NODE = "east-1"  # this node's name; every fleet of the test config runs here

COLUMNS = [
    "Hostname",
    "Address",
    "Public key",
    "Source IP",
    "Registered",
    "Last seen",
    "Last handshake",
    "Status",
    "Alive by",
    "Labels",
]


@dataclass
class Cell:
    text: str = ""
    titles: list[str] = field(default_factory=list)


class TableReader(HTMLParser):
    """The rows of one table (by id): each cell's text and the title attributes inside it."""

    def __init__(self, table_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.table_id = table_id
        self.depth = 0
        self.rows: list[list[Cell]] = []
        self.cell: Cell | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table" and (self.depth or attributes.get("id") == self.table_id):
            self.depth += 1
        if not self.depth:
            return
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = Cell()
            self.rows[-1].append(self.cell)
        title = attributes.get("title")
        if self.cell is not None and title is not None:
            self.cell.titles.append(title)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif tag in ("td", "th"):
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.text += data


def table(page: str, table_id: str) -> list[list[Cell]]:
    reader = TableReader(table_id)
    reader.feed(page)
    for row in reader.rows:
        for cell in row:
            cell.text = " ".join(cell.text.split())
    return reader.rows


def texts(page: str, table_id: str = "clients") -> list[list[str]]:
    """Body rows' cell texts (the header row left out)."""
    return [[cell.text for cell in row] for row in table(page, table_id)[1:]]


def column(page: str, name: str) -> list[str]:
    index = COLUMNS.index(name)
    return [row[index] for row in texts(page)]


def pager_link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]*)"', page)
    return html.unescape(found.group(1)) if found else None


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def put_peers(fake_wg: FakeWireGuard, rows: list[Client], handshakes: dict[str, datetime]) -> None:
    """Put the rows' peers on their fake interfaces, with the given live handshakes."""
    for row in rows:
        interface = fake_wg.interfaces[f"wg_{row.fleet}"]
        interface.peers[row.public_key] = f"{row.address}/128"
        if row.public_key in handshakes:
            interface.handshakes[row.public_key] = epoch(handshakes[row.public_key])


def forget_status(running: Running) -> None:
    """Drop the dumps cached so far, so the next reader takes a fresh one."""
    running.context.status = StatusCache(running.context.wireguard)


async def get(running: Running, path: str, **params: Any) -> httpx.Response:
    async with running.client() as http:
        # httpx would replace a query string in `path` with an empty `params`.
        return await http.get(path, params=params or None)


async def seed_four(running: Running, fake_wg: FakeWireGuard, clock: FakeClock) -> list[Client]:
    """Two hours after start: one client alive for each reason, named and unnamed."""
    clock.advance(hours=2)
    now = clock.now
    rows = [
        client_row(
            1,
            hostname="excavator",
            source_ip="192.0.2.7",
            registered_at=now - timedelta(hours=1),
            last_seen=now - timedelta(minutes=5),
        ),
        client_row(2, source_ip="2001:db8::7", registered_at=now - timedelta(minutes=10)),
        client_row(
            3,
            hostname="drill",
            registered_at=now - timedelta(hours=1),
            last_seen=now - timedelta(minutes=2),
            last_handshake=now - timedelta(minutes=4),
        ),
        client_row(4, registered_at=T0 - timedelta(days=1)),
    ]
    await insert(running, rows)
    await insert(running, [client_row(9, fleet="beta", hostname="excavator")])
    put_peers(fake_wg, rows, {rows[0].public_key: now - timedelta(seconds=60)})
    forget_status(running)
    return rows


async def test_index_lists_every_fleet_with_its_counts(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app(node=NODE) as running:
        await seed_four(running, fake_wg, clock)
        response = await get(running, "/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert texts(response.text, "fleets") == [
        ["alpha", NODE, "wg_alpha", "fd00:1::/64", "192.0.2.1:51820", "4", "1", "2"],
        ["beta", NODE, "wg_beta", "fd00:2::/64", "[2001:db8::1]:51821", "1", "0", "1"],
    ]
    assert [cell.text for cell in table(response.text, "fleets")[0]] == [
        "Fleet",
        "Node",
        "Interface",
        "Subnet",
        "Endpoint",
        "Clients",
        "Online",
        "Named",
    ]
    assert '<a href="/fleet/alpha">alpha</a>' in response.text
    assert '<meta http-equiv="refresh" content="15">' in response.text


async def test_api_fleets_has_the_same_counts(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app(node=NODE) as running:
        await seed_four(running, fake_wg, clock)
        # A handshake 3 minutes old no longer counts as online.
        fake_wg.interfaces["wg_beta"].peers[public_key(9, "beta")] = "fd00:2::9/128"
        fake_wg.interfaces["wg_beta"].handshakes[public_key(9, "beta")] = epoch(
            clock.now - timedelta(minutes=3)
        )
        response = await get(running, "/api/fleets")

    assert response.status_code == 200
    assert response.json() == {
        "fleets": [
            {
                "name": "alpha",
                "node": NODE,
                "interface": "wg_alpha",
                "subnet": "fd00:1::/64",
                "endpoint": "192.0.2.1:51820",
                "clients": 4,
                "online": 1,
                "named": 2,
            },
            {
                "name": "beta",
                "node": NODE,
                "interface": "wg_beta",
                "subnet": "fd00:2::/64",
                "endpoint": "[2001:db8::1]:51821",
                "clients": 1,
                "online": 0,
                "named": 1,
            },
        ]
    }


async def test_fleet_page_shows_every_column(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app(node=NODE) as running:
        rows = await seed_four(running, fake_wg, clock)
        response = await get(running, f"/fleet/{FLEET}")

    assert response.status_code == 200
    cells = table(response.text, "clients")
    assert [cell.text for cell in cells[0]] == COLUMNS
    excavator, unnamed, drill, old = rows
    assert texts(response.text) == [
        [
            "drill",
            drill.address,
            drill.public_key[:8] + "…" + drill.public_key[-6:],
            "192.0.2.10",
            "1 h ago",
            "2 min ago",
            "4 min ago",
            "offline",
            "ping",
            "",
        ],
        [
            "excavator",
            excavator.address,
            excavator.public_key[:8] + "…" + excavator.public_key[-6:],
            "192.0.2.7",
            "1 h ago",
            "5 min ago",
            "1 min ago",
            "online",
            "handshake",
            "",
        ],
        [
            "(none)",
            unnamed.address,
            unnamed.public_key[:8] + "…" + unnamed.public_key[-6:],
            "2001:db8::7",
            "10 min ago",
            "10 min ago",
            "N/A",
            "offline",
            "registration",
            "",
        ],
        [
            "(none)",
            old.address,
            old.public_key[:8] + "…" + old.public_key[-6:],
            "192.0.2.10",
            "1 d ago",
            "1 d ago",
            "N/A",
            "offline",
            "grace",
            "",
        ],
    ]
    titles = [[cell.titles for cell in row] for row in cells[1:]]
    # The full key, the FQDN and absolute UTC times are there on hover.
    assert titles[1][0] == ["excavator.alpha.fleet.test"]
    assert [row[2] for row in titles] == [[r.public_key] for r in (drill, excavator, unnamed, old)]
    assert titles[1][4:7] == [
        ["2026-01-01 13:00:00 UTC"],
        ["2026-01-01 13:55:00 UTC"],
        ["2026-01-01 13:59:00 UTC"],
    ]
    assert titles[2][6] == ["N/A"]
    assert "fleet.test" not in texts(response.text)[2][0]
    assert '<meta http-equiv="refresh" content="15">' in response.text


async def test_api_clients_has_the_same_data(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app(node=NODE) as running:
        excavator, unnamed, *_ = await seed_four(running, fake_wg, clock)
        response = await get(running, f"/api/fleets/{FLEET}/clients", limit=3)

    assert response.status_code == 200
    body = response.json()
    assert [client["hostname"] for client in body["clients"]] == ["drill", "excavator", None]
    assert body["next_cursor"]
    assert body["clients"][1] == {
        "address": excavator.address,
        "hostname": "excavator",
        "fqdn": "excavator.alpha.fleet.test",
        "public_key": excavator.public_key,
        "source_ip": "192.0.2.7",
        "registered_at": "2026-01-01T13:00:00Z",
        "last_seen": "2026-01-01T13:55:00Z",
        "last_handshake": "2026-01-01T13:59:00Z",
        "last_activity": "2026-01-01T13:59:00Z",
        "alive_because": "handshake",
        "online": True,
        "labels": {},
    }
    assert body["clients"][2] == {
        "address": unnamed.address,
        "hostname": None,
        "fqdn": None,
        "public_key": unnamed.public_key,
        "source_ip": "2001:db8::7",
        "registered_at": "2026-01-01T13:50:00Z",
        "last_seen": "2026-01-01T13:50:00Z",
        "last_handshake": None,
        "last_activity": "2026-01-01T13:50:00Z",
        "alive_because": "registration",
        "online": False,
        "labels": {},
    }


@pytest.mark.parametrize(
    ("sort", "numbers"),
    [("hostname", [3, 1, 2, 4]), ("activity", [3, 1, 2, 4]), ("address", [4, 3, 2, 1])],
)
async def test_fleet_page_sorts(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock, sort: Sort, numbers: list[int]
) -> None:
    async with start_app(node=NODE) as running:
        rows = await seed_four(running, fake_wg, clock)
        response = await get(running, f"/fleet/{FLEET}", sort=sort)

    assert column(response.text, "Address") == [address(n) for n in numbers]
    assert column(response.text, "Address") == expected_order(rows, sort)
    assert f'<option value="{sort}" selected>' in response.text


@pytest.mark.parametrize(
    ("q", "hostnames"),
    [
        ("exc", ["excavator"]),
        (" DRI ", ["drill"]),
        ("fd00:1::1", None),  # every address of the fleet
        (public_key(2)[:6], ["(none)"]),
    ],
)
async def test_fleet_page_searches_hostname_address_or_key_prefix(
    start_app: StartApp,
    fake_wg: FakeWireGuard,
    clock: FakeClock,
    q: str,
    hostnames: list[str] | None,
) -> None:
    async with start_app(node=NODE) as running:
        await seed_four(running, fake_wg, clock)
        response = await get(running, f"/fleet/{FLEET}", q=q)

    assert response.status_code == 200
    assert column(response.text, "Hostname") == (
        hostnames or ["drill", "excavator", "(none)", "(none)"]
    )
    assert f'value="{html.escape(q)}"' in response.text  # the box keeps the search


async def test_a_search_without_matches_says_so_and_escapes_the_query(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    q = '"><b>zzz'
    async with start_app(node=NODE) as running:
        await seed_four(running, fake_wg, clock)
        response = await get(running, f"/fleet/{FLEET}", q=q)

    assert texts(response.text) == [['No clients match “"><b>zzz”.']]
    assert "<b>zzz" not in response.text
    assert 'value="&#34;&gt;&lt;b&gt;zzz"' in response.text


async def test_fleet_page_pages_forward_and_back(start_app: StartApp) -> None:
    rows = mixed_rows(250)
    async with start_app(node=NODE) as running:
        await insert(running, rows)
        first = await get(running, f"/fleet/{FLEET}", q="", sort="activity")
        next_link = pager_link(first.text, "next")
        assert next_link is not None
        middle = await get(running, f"/fleet/{FLEET}{next_link}")
        last_link = pager_link(middle.text, "next")
        assert last_link is not None
        last = await get(running, f"/fleet/{FLEET}{last_link}")
        back_link = pager_link(last.text, "prev")
        assert back_link is not None
        back = await get(running, f"/fleet/{FLEET}{back_link}")

    order = expected_order(rows, "activity")
    assert column(first.text, "Address") == order[:100]
    assert column(middle.text, "Address") == order[100:200]
    assert column(last.text, "Address") == order[200:]
    assert column(back.text, "Address") == order[100:200]
    assert pager_link(first.text, "prev") is None
    assert '<span class="disabled">← Previous</span>' in first.text
    assert pager_link(middle.text, "prev") is not None
    assert pager_link(last.text, "next") is None
    assert next_link.startswith("?q=&sort=activity&limit=100&cursor=")


async def test_pager_links_keep_the_search_and_limit(start_app: StartApp) -> None:
    rows = mixed_rows(250)
    wanted = expected_order([r for r in rows if r.hostname], "hostname")
    async with start_app(node=NODE) as running:
        await insert(running, rows)
        first = await get(running, f"/fleet/{FLEET}", q="h", limit=40)
        link = pager_link(first.text, "next")
        assert link is not None
        second = await get(running, f"/fleet/{FLEET}{link}")

    assert link.startswith("?q=h&sort=hostname&limit=40&cursor=")
    assert column(first.text, "Address") == wanted[:40]
    assert column(second.text, "Address") == wanted[40:80]
    assert 'value="h"' in second.text


async def test_an_unknown_fleet_is_a_404(start_app: StartApp) -> None:
    async with start_app(node=NODE) as running:
        api = await get(running, "/api/fleets/nope/clients")
        page = await get(running, "/fleet/nope")

    assert api.status_code == 404
    assert api.json() == {"detail": "There is no fleet named 'nope'."}
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "<h1>404</h1>" in page.text
    assert "There is no fleet named &#39;nope&#39;." in page.text
    assert 'href="/"' in page.text


@pytest.mark.parametrize("cursor", ["garbage!!", "eyJhIjogMX0", "W10"])
async def test_a_bad_cursor_is_a_400_sentence(start_app: StartApp, cursor: str) -> None:
    async with start_app(node=NODE) as running:
        await insert(running, mixed_rows(5))
        api = await get(running, f"/api/fleets/{FLEET}/clients", cursor=cursor)
        page = await get(running, f"/fleet/{FLEET}", cursor=cursor)

    assert api.status_code == 400
    assert api.json() == {"detail": "The cursor is not one this server handed out."}
    assert page.status_code == 400
    assert "The cursor is not one this server handed out." in page.text


async def test_a_cursor_from_another_sort_is_a_400(start_app: StartApp) -> None:
    async with start_app(node=NODE) as running:
        await insert(running, mixed_rows(5))
        first = await get(running, f"/api/fleets/{FLEET}/clients", sort="activity", limit=2)
        cursor = first.json()["next_cursor"]
        other = await get(running, f"/api/fleets/{FLEET}/clients", sort="address", cursor=cursor)
        same = await get(running, f"/api/fleets/{FLEET}/clients", sort="activity", cursor=cursor)

    assert other.status_code == 400
    assert other.json() == {"detail": "The cursor belongs to another sort order; start again."}
    assert same.status_code == 200


async def test_api_limits_are_validated(start_app: StartApp) -> None:
    async with start_app(node=NODE) as running:
        zero = await get(running, f"/api/fleets/{FLEET}/clients", limit=0)
        huge = await get(running, f"/api/fleets/{FLEET}/clients", limit=1001)
        sort = await get(running, f"/api/fleets/{FLEET}/clients", sort="age")

    assert [r.status_code for r in (zero, huge, sort)] == [422, 422, 422]
    assert zero.json()["detail"].startswith("Invalid request: query.limit:")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition as {(name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    """One sample's value, or None; per-fleet series also carry the node's name."""
    if "fleet" in labels:
        labels.setdefault("node", NODE)
    return found.get((name, tuple(sorted(labels.items()))))


async def register(running: Running, fleet: str = FLEET) -> dict[str, Any]:
    async with running.client("192.0.2.50") as http:
        response = await http.post(f"/fleet/{fleet}/register")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def ping(running: Running, address: str, **body: Any) -> None:
    async with running.in_tunnel(address) as http:
        response = await http.post(f"/fleet/{FLEET}/ping", json=body)
    assert response.status_code == 200, response.text


async def metrics(running: Running) -> dict[Any, float]:
    response = await get(running, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_metrics_follow_registrations_pings_and_prunes(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app(node=NODE) as running:
        at_start = await metrics(running)
        kept = await register(running)
        gone = await register(running)
        await register(running, "beta")
        await ping(running, gone["address"], hostname="excavator")
        await ping(running, gone["address"])
        await ping(running, kept["address"])
        before = await metrics(running)

        clock.advance(minutes=31)
        fake_wg.interfaces["wg_alpha"].handshakes[kept["public_key"]] = epoch(clock.now)
        await sweep_all(running.context)
        after = await metrics(running)

    for fleet in ("alpha", "beta"):
        for name in ("registrations", "pings", "pruned"):
            assert value(at_start, f"wg_fleet_{name}_total", fleet=fleet) == 0
    assert value(at_start, "wg_fleet_prune_duration_seconds_count") == 1  # the start-up pass

    assert value(before, "wg_fleet_clients", fleet="alpha") == 2
    assert value(before, "wg_fleet_clients", fleet="beta") == 1
    assert value(before, "wg_fleet_registrations_total", fleet="alpha") == 2
    assert value(before, "wg_fleet_registrations_total", fleet="beta") == 1
    assert value(before, "wg_fleet_pings_total", fleet="alpha") == 3
    assert value(before, "wg_fleet_pings_total", fleet="beta") == 0
    assert value(before, "wg_fleet_clients_online", fleet="alpha") == 0

    assert value(after, "wg_fleet_pruned_total", fleet="alpha") == 1
    assert value(after, "wg_fleet_pruned_total", fleet="beta") == 1
    assert value(after, "wg_fleet_clients", fleet="alpha") == 1
    assert value(after, "wg_fleet_clients", fleet="beta") == 0
    assert value(after, "wg_fleet_clients_online", fleet="alpha") == 1
    assert value(after, "wg_fleet_registrations_total", fleet="alpha") == 2
    assert value(after, "wg_fleet_prune_duration_seconds_count") == 2
    assert value(after, "wg_fleet_prune_duration_seconds_bucket", le="+Inf") == 2


async def test_metrics_count_failed_wg_commands(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app(node=NODE) as running:
        before = await metrics(running)
        fake_wg.fail = {"show"}
        await sweep_all(running.context)
        fake_wg.fail = set()
        after = await metrics(running)

    assert value(before, "wg_fleet_command_failures_total", command="wg") is None
    assert value(after, "wg_fleet_command_failures_total", command="wg") == 2  # one per fleet
    assert value(after, "wg_fleet_prune_duration_seconds_count") == 2


async def test_metrics_have_no_per_client_labels(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app(node=NODE) as running:
        answers = [await register(running) for _ in range(3)]
        await ping(running, answers[0]["address"], hostname="excavator")
        for answer in answers:
            fake_wg.interfaces["wg_alpha"].handshakes[answer["public_key"]] = epoch(T0)
        forget_status(running)
        response = await get(running, "/metrics")

    found = samples(response.text)
    assert value(found, "wg_fleet_clients_online", fleet="alpha") == 3
    allowed = {"fleet", "node", "command", "le", "what", "file", "result"}  # result: webhooks
    assert {name for _, labels in found for name, _ in labels} <= allowed
    for answer in answers:
        assert answer["address"] not in response.text
        assert answer["public_key"] not in response.text
    assert "excavator" not in response.text


async def test_health_passes_when_everything_works(start_app: StartApp) -> None:
    async with start_app(node=NODE) as running:
        response = await get(running, "/health")

    assert response.status_code == 200
    assert response.json() == {"status": "pass"}


async def test_health_fails_naming_an_interface_that_is_down(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app(node=NODE) as running:
        fake_wg.interfaces["wg_alpha"].up = False
        response = await get(running, "/health")

    assert response.status_code == 503
    assert response.json() == {
        "status": "fail",
        "problems": ["fleet alpha: interface wg_alpha is down"],
    }


async def test_health_fails_when_the_database_does_not_answer(
    start_app: StartApp, tmp_path: Path
) -> None:
    unusable = tmp_path / "a-directory.db"
    unusable.mkdir()
    async with start_app(node=NODE) as running:
        working = running.context.database
        running.context.database = Database(str(unusable))
        try:
            response = await get(running, "/health")
        finally:
            running.context.database.close()
            running.context.database = working

    assert response.status_code == 503
    assert response.json() == {
        "status": "fail",
        "problems": ["the database does not answer (OperationalError)"],
    }


async def test_openapi_documents_the_json_api(start_app: StartApp) -> None:
    async with start_app(node=NODE) as running:
        response = await get(running, "/openapi.json")

    paths = response.json()["paths"]
    assert {"/api/fleets", "/api/fleets/{fleet}/clients", "/metrics", "/health"} <= set(paths)
    parameters = {p["name"] for p in paths["/api/fleets/{fleet}/clients"]["get"]["parameters"]}
    assert parameters == {"fleet", "q", "limit", "cursor", "sort", "label"}
    responses = paths["/api/fleets/{fleet}/clients"]["get"]["responses"]
    assert {"200", "400", "404"} <= set(responses)
    assert "/" not in paths
    assert "/fleet/{fleet}" not in paths


async def test_pages_share_one_wg_dump_per_fleet_within_the_ttl(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app(node=NODE) as running:
        await insert(running, mixed_rows(50))
        forget_status(running)
        before = {fleet: fake_wg.count("wg", "show", f"wg_{fleet}") for fleet in ("alpha", "beta")}
        for _ in range(3):
            assert (await get(running, f"/fleet/{FLEET}")).status_code == 200
            assert (await get(running, "/")).status_code == 200
            assert (await get(running, f"/api/fleets/{FLEET}/clients")).status_code == 200
            assert (await get(running, "/metrics")).status_code == 200
        after = {fleet: fake_wg.count("wg", "show", f"wg_{fleet}") for fleet in ("alpha", "beta")}

    assert {fleet: after[fleet] - before[fleet] for fleet in after} == {"alpha": 1, "beta": 1}


async def test_a_fleet_of_another_node_is_shown_from_the_stored_handshakes(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    fleets = {
        FLEET: {"ip6": "fd00:1::1", "subnet": "fd00:1::/64", "external_ip": "192.0.2.1", "port": 1},
        "beta": {
            "ip6": "fd00:2::1",
            "subnet": "fd00:2::/64",
            "external_ip": "192.0.2.2",
            "port": 2,
            "node": "west-2",
        },
    }
    now = T0
    rows = [
        client_row(1, fleet="beta", hostname="crane", last_handshake=now - timedelta(minutes=1)),
        client_row(2, fleet="beta", last_handshake=now - timedelta(minutes=5)),
        client_row(3, fleet="beta"),
    ]
    async with start_app(node=NODE, fleets=fleets) as running:
        await insert(running, rows)
        fleets_out = (await get(running, "/api/fleets")).json()["fleets"]
        page = await get(running, "/fleet/beta")
        health = await get(running, "/health")
        found = await metrics(running)

    assert fleets_out[1] == {
        "name": "beta",
        "node": "west-2",
        "interface": "wg_beta",
        "subnet": "fd00:2::/64",
        "endpoint": "192.0.2.2:2",
        "clients": 3,
        "online": 1,
        "named": 1,
    }
    assert column(page.text, "Status") == ["online", "offline", "offline"]
    assert column(page.text, "Last handshake") == ["1 min ago", "5 min ago", "N/A"]
    assert "wg_beta" not in fake_wg.interfaces
    assert fake_wg.count("wg", "show", "wg_beta") == 0
    assert health.json() == {"status": "pass"}
    assert value(found, "wg_fleet_clients", fleet="beta", node="west-2") == 3
    assert value(found, "wg_fleet_clients_online", fleet="beta", node="west-2") == 1


async def test_health_runs_ip_at_most_once_a_second_per_fleet(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app(node=NODE) as running:
        before = fake_wg.count("ip")
        answers = await asyncio.gather(*(get(running, "/health") for _ in range(20)))
        answers += [await get(running, "/health") for _ in range(20)]
        calls = fake_wg.count("ip") - before

    assert {answer.status_code for answer in answers} == {200}
    assert calls <= len(running.context.config.local_fleets)

"""Keyset pagination: every row exactly once, in order, both ways, for every sort and search.

The row factory and `insert` here are shared with test_admin.py and the browser tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from ipaddress import IPv6Address
from typing import Any

import pytest
from sqlalchemy.orm import Session

from database import Client, Database
from listing import SORTS, Cursor, InvalidCursor, Page, Sort, select_page
from tests.conftest import FLEET, Running

StartApp = Callable[..., Any]

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # FakeClock's first reading
SUBNETS = {"alpha": IPv6Address("fd00:1::"), "beta": IPv6Address("fd00:2::")}
NOT_OURS = "The cursor is not one this server handed out."
OTHER_SORT = "The cursor belongs to another sort order; start again."


def public_key(n: int, fleet: str = FLEET) -> str:
    """A distinct, key-shaped (base64 of 32 bytes) public key per (fleet, n)."""
    return base64.b64encode(hashlib.sha256(f"{fleet}-{n}".encode()).digest()).decode()


def address(n: int, fleet: str = FLEET) -> str:
    """Distinct addresses whose text order differs from n's order (7919 is odd)."""
    return str(SUBNETS[fleet] + 0x1000 + (n * 7919) % 0x1000)


def client_row(
    n: int,
    *,
    fleet: str = FLEET,
    hostname: str | None = None,
    requested_hostname: str | None = None,
    source_ip: str = "192.0.2.10",
    registered_at: datetime | None = None,
    last_seen: datetime | None = None,
    last_handshake: datetime | None = None,
    last_active: datetime | None = None,
) -> Client:
    """A row as registration and pings leave it; every non-null column is set."""
    registered = registered_at or T0 - timedelta(hours=1)
    seen = last_seen or registered
    return Client(
        fleet=fleet,
        address=address(n, fleet),
        public_key=public_key(n, fleet),
        hostname=hostname,
        requested_hostname=requested_hostname or hostname,
        source_ip=source_ip,
        registered_at=registered,
        last_seen=seen,
        last_handshake=last_handshake,
        last_active=last_active or max(seen, last_handshake or seen),
    )


def mixed_rows(count: int, fleet: str = FLEET) -> list[Client]:
    """Every third client unnamed; names in an order unrelated to insertion; last_active
    shared by a seventh of the rows each: ties straddle page boundaries and must be
    broken by the key."""
    return [
        client_row(
            n,
            fleet=fleet,
            hostname=None if n % 3 == 0 else f"h{(n * 919) % 1000:03d}",
            last_active=T0 - timedelta(minutes=n % 7),
        )
        for n in range(count)
    ]


async def insert_into(database: Database, rows: Sequence[Client]) -> list[int]:
    """Insert `rows` in one transaction; return their ids."""

    def add(session: Session) -> list[int]:
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]

    return await database.write(add)


async def insert(running: Running, rows: Sequence[Client]) -> list[int]:
    return await insert_into(running.context.database, rows)


def expected_order(rows: Iterable[Client], sort: Sort) -> list[str]:
    """The addresses of `rows` in the order `sort` promises."""
    rows = list(rows)
    if sort == "hostname":
        named = sorted((r for r in rows if r.hostname), key=lambda r: (r.hostname, r.id))
        unnamed = sorted((r for r in rows if not r.hostname), key=lambda r: r.id)
        ordered = named + unnamed
    elif sort == "activity":
        ordered = sorted(rows, key=lambda r: (r.last_active, r.id), reverse=True)
    else:
        ordered = sorted(rows, key=lambda r: (r.address, r.id))
    return [r.address for r in ordered]


async def page_at(
    running: Running, sort: Sort, cursor: str | None, *, q: str = "", limit: int = 100
) -> Page:
    position = Cursor.decode(cursor, sort) if cursor else None
    return await running.context.database.read(
        lambda session: select_page(session, FLEET, sort=sort, q=q, limit=limit, cursor=position)
    )


def addresses(page: Page) -> list[str]:
    return [row.address for row in page.rows]


async def api_walk(running: Running, sort: Sort, *, q: str = "", limit: int = 100) -> list[Any]:
    """Every page of /api/fleets/alpha/clients, following next_cursor."""
    pages: list[Any] = []
    cursor: str | None = None
    async with running.client() as http:
        while True:
            params: dict[str, Any] = {"sort": sort, "limit": limit, "q": q}
            if cursor:
                params["cursor"] = cursor
            response = await http.get(f"/api/fleets/{FLEET}/clients", params=params)
            assert response.status_code == 200, response.text
            pages.append(response.json())
            cursor = response.json()["next_cursor"]
            if cursor is None or len(pages) > 100:
                return pages


@pytest.mark.parametrize("sort", SORTS)
async def test_every_row_once_in_order_across_all_pages(start_app: StartApp, sort: Sort) -> None:
    rows = mixed_rows(250)
    async with start_app() as running:
        await insert(running, rows)
        await insert(running, mixed_rows(30, fleet="beta"))
        pages = await api_walk(running, sort)

    assert [len(page["clients"]) for page in pages] == [100, 100, 50]
    shown = [client["address"] for page in pages for client in page["clients"]]
    assert shown == expected_order(rows, sort)
    assert len(set(shown)) == 250


@pytest.mark.parametrize("sort", SORTS)
async def test_previous_cursors_lead_back_through_the_same_pages(
    start_app: StartApp, sort: Sort
) -> None:
    async with start_app() as running:
        await insert(running, mixed_rows(250))
        forward = [await page_at(running, sort, None)]
        while forward[-1].next_cursor:
            forward.append(await page_at(running, sort, forward[-1].next_cursor))
        backward = [forward[-1]]
        while backward[-1].previous_cursor:
            backward.append(await page_at(running, sort, backward[-1].previous_cursor))

    assert [len(page.rows) for page in forward] == [100, 100, 50]
    assert [addresses(page) for page in backward] == [addresses(page) for page in forward][::-1]
    assert forward[0].previous_cursor is None
    assert forward[-1].next_cursor is None
    assert all(page.next_cursor and page.previous_cursor for page in forward[1:-1])
    # Going back reaches the first page, which again offers no previous page.
    assert backward[-1].previous_cursor is None
    assert backward[-1].next_cursor is not None


async def test_hostname_sort_crosses_from_named_to_unnamed_clients_both_ways(
    start_app: StartApp,
) -> None:
    # 3 named, 4 unnamed with limit 2: the second page holds the last named and first unnamed.
    rows = [client_row(n, hostname=f"n{n}" if n < 3 else None) for n in range(7)]
    async with start_app() as running:
        await insert(running, rows)
        first = await page_at(running, "hostname", None, limit=2)
        second = await page_at(running, "hostname", first.next_cursor, limit=2)
        third = await page_at(running, "hostname", second.next_cursor, limit=2)
        back = await page_at(running, "hostname", third.previous_cursor, limit=2)

    assert [r.hostname for r in first.rows] == ["n0", "n1"]
    assert [r.hostname for r in second.rows] == ["n2", None]
    assert addresses(second) == [address(2), address(3)]
    assert addresses(third) == [address(4), address(5)]
    assert addresses(back) == addresses(second)


@pytest.mark.parametrize("sort", SORTS)
async def test_a_last_page_that_is_exactly_full_offers_no_next_page(
    start_app: StartApp, sort: Sort
) -> None:
    async with start_app() as running:
        await insert(running, mixed_rows(200))
        first = await page_at(running, sort, None)
        second = await page_at(running, sort, first.next_cursor)

    assert (len(first.rows), len(second.rows)) == (100, 100)
    assert second.next_cursor is None
    assert second.previous_cursor is not None


async def test_an_empty_fleet_has_one_empty_page(start_app: StartApp) -> None:
    async with start_app() as running:
        await insert(running, mixed_rows(5, fleet="beta"))
        page = await page_at(running, "hostname", None)
        async with running.client() as http:
            response = await http.get(f"/api/fleets/{FLEET}/clients")

    assert page == Page([], None, None)
    assert response.json() == {"clients": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("q", "matches"),
    [
        ("h1", lambda r: (r.hostname or "").startswith("h1")),
        ("H1", lambda r: (r.hostname or "").startswith("h1")),
        ("fd00:1::10", lambda r: r.address.startswith("fd00:1::10")),
        ("FD00:1::1A", lambda r: r.address.startswith("fd00:1::1a")),
        (public_key(7)[:4], lambda r: r.public_key.startswith(public_key(7)[:4])),
        ("zzz", lambda r: False),
    ],
)
async def test_search_pages_through_hostname_address_or_key_prefix_matches(
    start_app: StartApp, q: str, matches: Callable[[Client], bool]
) -> None:
    rows = mixed_rows(250)
    wanted = [r for r in rows if matches(r)]
    async with start_app() as running:
        await insert(running, rows)
        await insert(running, mixed_rows(250, fleet="beta"))
        pages = await api_walk(running, "hostname", q=q, limit=7)

    shown = [client["address"] for page in pages for client in page["clients"]]
    assert shown == expected_order(wanted, "hostname")
    assert q == "zzz" or shown  # each real prefix matches something


def test_a_cursor_survives_encoding_with_a_time_in_its_key() -> None:
    cursor = Cursor("activity", 0, (T0 + timedelta(microseconds=7), 42), backwards=True)
    assert Cursor.decode(cursor.encode(), "activity") == cursor
    assert "=" not in cursor.encode()  # URL-safe without padding


@pytest.mark.parametrize("text", ["", "not base64 at all!", "bm90IGpzb24", "WzEsMl0"])
def test_a_cursor_that_is_not_ours_is_refused(text: str) -> None:
    with pytest.raises(InvalidCursor, match=f"^{NOT_OURS}$"):
        Cursor.decode(text, "hostname")


def test_a_cursor_of_another_sort_is_refused() -> None:
    cursor = Cursor("activity", 0, (T0, 1)).encode()
    with pytest.raises(InvalidCursor, match=OTHER_SORT):
        Cursor.decode(cursor, "address")


def forged(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


# Cursors are opaque but not signed: a hand-made one must be refused, not crash the
# query or start from a segment that does not exist. See the fix in the notes.
@pytest.mark.parametrize(
    ("payload", "sort"),
    [
        (["activity", 0, [5, 1], False], "activity"),
        (["activity", 0, ["2026-01-01T00:00:00", 1], False], "activity"),
        (["activity", 0, 7, False], "activity"),
        (["hostname", -1, [1], False], "hostname"),
        (["address", 0, [{"a": 1}, 1], False], "address"),
    ],
)
async def test_a_forged_cursor_is_a_bad_request(
    start_app: StartApp, payload: Any, sort: Sort
) -> None:
    async with start_app() as running:
        await insert(running, mixed_rows(5))
        async with running.client() as http:
            response = await http.get(
                f"/api/fleets/{FLEET}/clients", params={"sort": sort, "cursor": forged(payload)}
            )
    assert response.status_code == 400
    assert response.json() == {"detail": NOT_OURS}

"""Server-side time of the dashboard, the JSON API and /metrics at 50,000 clients.

    python bench/dashboard.py [--clients 50000] [--requests 30] [--explain]

In one process, no network: a temp SQLite database is seeded in bulk, the app runs
with the fake `wg` runner of the unit tests (its interface holds a peer for every
client, a third of them with a handshake under 3 minutes old), and every request goes
through httpx's ASGITransport. The time is taken around the ASGI call, so it is the
server's own: routing, database, status cache, templates and serialisation, no TCP.

The status cache keeps a fleet's `wg show dump` for a few seconds and refreshes an
expired one in the background while answering from the old one. A refresh (`wg` plus
parsing 50,000 lines) is measured on its own ("status refresh"): no request waits for
it, but it runs in this process and slows whatever runs meanwhile, so each series
starts with a fresh dump to keep refreshes out of it. `--explain` prints SQLite's query
plan for every statement a request runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
from sqlalchemy import event, insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import Config, parse_config  # noqa: E402
from context import AppContext  # noqa: E402
from database import CLIENTS, Database  # noqa: E402
from main import create_app  # noqa: E402
from status import StatusCache  # noqa: E402
from tests.fakes import FakeInterface, FakeWireGuard  # noqa: E402

FLEET = "alpha"
SUBNET = IPv6Address("fd00:1::")
MACHINES = ["excavator", "bulldozer", "crane", "loader", "grader", "dumper", "forklift", "drill"]
TARGET_MS = 100.0


def make_config(directory: Path) -> Config:
    return parse_config(
        {
            "domain": "fleet.test",
            "prune_timeout": "30m",
            "prune_interval": "1d",  # no pass while measuring
            "database": str(directory / "clients.db"),
            "hosts_file": str(directory / "hosts"),
            "wireguard_dir": str(directory / "wireguard"),
            "listen": {"host": "127.0.0.1", "port": 8000},
            "fleets": {
                FLEET: {
                    "ip6": "fd00:1::1",
                    "subnet": "fd00:1::/64",
                    "external_ip": "192.0.2.1",
                    "port": 51820,
                },
                "beta": {
                    "ip6": "fd00:2::1",
                    "subnet": "fd00:2::/64",
                    "external_ip": "192.0.2.1",
                    "port": 51821,
                },
            },
        },
        "bench",
    )


def public_key(n: int) -> str:
    return base64.b64encode(hashlib.sha256(f"bench-{n}".encode()).digest()).decode()


def seed_rows(count: int, now: datetime) -> list[dict[str, Any]]:
    """Four in five clients named; a third with a recent handshake, stored as the pass
    that saw it left it (so the start-up pass has nothing to update)."""
    rows = []
    for n in range(count):
        machine = MACHINES[n % len(MACHINES)]
        registered = now - timedelta(days=n % 20, minutes=n % 1440)
        seen = now - timedelta(seconds=n % 1700)
        handshake = (
            (now - timedelta(seconds=n % 170)).replace(microsecond=0) if n % 3 == 0 else None
        )
        rows.append(
            {
                "fleet": FLEET,
                "address": str(SUBNET + 0x1000 + n),
                "public_key": public_key(n),
                "hostname": None if n % 5 == 4 else f"{machine}{n // len(MACHINES) + 1}",
                "requested_hostname": None if n % 5 == 4 else machine,
                "source_ip": f"198.51.{n // 250 % 256}.{n % 250 + 1}",
                "registered_at": registered,
                "last_seen": max(seen, registered),
                "last_handshake": handshake,
                "last_active": max(m for m in (seen, registered, handshake) if m is not None),
            }
        )
    return rows


def seed(config: Config, rows: list[dict[str, Any]]) -> FakeWireGuard:
    """One executemany in one transaction; then the interface as a restart finds it."""
    database = Database(config.database)
    try:
        database.migrate()
        with database.engine.begin() as connection:
            connection.execute(insert(CLIENTS), rows)
    finally:
        database.close()
    fake = FakeWireGuard()
    fake.interfaces["wg_beta"] = FakeInterface()
    interface = fake.interfaces[f"wg_{FLEET}"] = FakeInterface()
    for row in rows:
        interface.peers[row["public_key"]] = f"{row['address']}/128"
        if row["last_handshake"] is not None:
            interface.handshakes[row["public_key"]] = int(row["last_handshake"].timestamp())
    return fake


class TimedApp:
    """Wraps an ASGI app and keeps the duration of the last call."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.last = time.perf_counter() - started


@dataclass
class Result:
    name: str
    path: str
    times: list[float]
    status: int
    size: int

    def row(self) -> list[str]:
        ordered = sorted(self.times)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        median = statistics.median(ordered)
        verdict = "ok" if p95 * 1000 < TARGET_MS else "SLOW"
        return [
            self.name,
            f"{median * 1000:.1f}",
            f"{p95 * 1000:.1f}",
            f"{ordered[-1] * 1000:.1f}",
            f"{self.size / 1024:.0f}",
            verdict,
        ]


@contextmanager
def statements(engine: sqlalchemy.Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (with parameters) run on `engine` inside the block."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, sql: str, parameters: Any, *_: Any) -> None:
        seen.append((sql, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def explain(engine: sqlalchemy.Engine, sql: str, parameters: Any) -> list[str]:
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)
        return [str(line[-1]) for line in cursor.fetchall()]


async def measure(
    http: httpx.AsyncClient, timed: TimedApp, context: AppContext, path: str, requests: int
) -> tuple[list[float], int, int]:
    # A fresh dump, so that no request of the series pays for one (the TTL is seconds).
    context.status = StatusCache(context.wireguard)
    await context.status.dump(FLEET)
    await context.status.dump("beta")
    for _ in range(3):  # warm-up: compiled templates and statements, filled caches
        await http.get(path)
    times = []
    status = size = 0
    for _ in range(requests):
        response = await http.get(path)
        status, size = response.status_code, len(response.content)
        if status != 200:
            raise SystemExit(f"{path} answered {status}: {response.text[:300]}")
        times.append(timed.last)
    return times, status, size


async def middle_cursor(http: httpx.AsyncClient, pages: int) -> str:
    """The cursor of page `pages + 1`, reached by following next_cursor like a user."""
    cursor = ""
    for _ in range(pages):
        response = await http.get(
            f"/api/fleets/{FLEET}/clients", params={"limit": 100, "cursor": cursor}
        )
        cursor = response.json()["next_cursor"]
    return cursor


async def run(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wg-fleet-bench-") as temp:
        config = make_config(Path(temp))
        now = datetime.now(UTC)
        started = time.perf_counter()
        rows = seed_rows(arguments.clients, now)
        fake = seed(config, rows)
        seeded = time.perf_counter() - started
        app = create_app(config, runner=fake)
        timed = TimedApp(app)
        started = time.perf_counter()
        async with app.router.lifespan_context(app):
            startup = time.perf_counter() - started
            context: AppContext = app.state.context
            transport = httpx.ASGITransport(app=timed, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                pages = max(1, arguments.clients // 200)
                cursor = await middle_cursor(http, pages)
                cases = [
                    ("fleet page, first", f"/fleet/{FLEET}"),
                    (f"fleet page, page {pages + 1}", f"/fleet/{FLEET}?cursor={cursor}"),
                    ("fleet page, sort=activity", f"/fleet/{FLEET}?sort=activity"),
                    ("fleet page, sort=address", f"/fleet/{FLEET}?sort=address"),
                    ("fleet page, search 'crane1'", f"/fleet/{FLEET}?q=crane1"),
                    ("fleet page, search address", f"/fleet/{FLEET}?q=fd00:1::1a"),
                    ("fleet page, search, no match", f"/fleet/{FLEET}?q=zzz"),
                    ("/api/fleets/alpha/clients", f"/api/fleets/{FLEET}/clients"),
                    (
                        f"/api/.../clients, page {pages + 1}",
                        f"/api/fleets/{FLEET}/clients?cursor={cursor}",
                    ),
                    ("/api/fleets", "/api/fleets"),
                    ("/metrics", "/metrics"),
                    ("index page", "/"),
                ]
                results = []
                for name, path in cases:
                    with statements(context.database.engine) as sql:
                        times, status, size = await measure(
                            http, timed, context, path, arguments.requests
                        )
                    results.append(Result(name, path, times, status, size))
                    if arguments.explain:
                        print(f"\n{name}: {path}")
                        selects = {
                            s: p for s, p in reversed(sql) if s.lstrip().startswith("SELECT")
                        }
                        for text, parameters in selects.items():
                            print("  " + " ".join(text.split())[:160])
                            for line in explain(context.database.engine, text, parameters):
                                print(f"    -> {line}")
                refresh = []
                for _ in range(5):
                    context.status = StatusCache(context.wireguard)
                    started = time.perf_counter()
                    await context.status.dump(FLEET)
                    refresh.append(time.perf_counter() - started)

    print_report(arguments, results, seeded, startup, refresh)


def print_report(
    arguments: argparse.Namespace,
    results: list[Result],
    seeded: float,
    startup: float,
    refresh: list[float],
) -> None:
    header = ["request", "median ms", "p95 ms", "max ms", "KiB", f"< {TARGET_MS:.0f} ms"]
    table = [header] + [result.row() for result in results]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print(
        f"\nwg-fleet dashboard benchmark: {arguments.clients:,} clients, "
        f"{arguments.requests} requests each, server-side time around the ASGI call"
    )
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {sqlalchemy.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.machine()}), {platform.platform(terse=True)}"
    )
    print(
        f"seeding {seeded:.1f} s, start-up (reconcile {arguments.clients:,} peers) {startup:.1f} s"
    )
    print()
    for index, line in enumerate(table):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        ]
        print("| " + " | ".join(cells) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(
        f"\nstatus refresh (one `wg show dump` of {arguments.clients:,} peers, parsed; "
        f"in the background, at most once per fleet every few seconds): "
        f"median {statistics.median(refresh) * 1000:.0f} ms, max {max(refresh) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--explain", action="store_true", help="print each query's plan")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

"""The database fails under a running node, for real: PostgreSQL stopped for 30 s with
`pg_ctl stop -m fast`, and SQLite on a tmpfs filled to the last byte.

Registrations must answer 503 with a sentence and leave nothing behind, pings of known
clients must keep answering from memory and their times must reach the database once it
is back, /health must name the database, and the node must recover by itself.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import REQUIRED
from tests.e2e.harness import HTTP_PORT, Client, Lab, Server, fleet_config, unique, wait_for
from tests.postgres import PostgresServer
from tests.postgres import missing as postgres_missing

UNAVAILABLE = "The database is not available right now, so nothing was changed; try again later."
FULL = "The database has no room left (its disk is full), so nothing was changed; try again later."
OUTAGE_SECONDS = 30
RECOVERY_SECONDS = 10


@dataclass
class Answer:
    sent: float  # wall-clock time the request was sent
    status: int
    body: Any


@dataclass
class Load:
    """Threads that send one request after another until stopped, recording answers."""

    answers: dict[str, list[Answer]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def add(self, name: str, send: Callable[[], tuple[int, Any]], pause: float) -> None:
        answers = self.answers.setdefault(name, [])

        def run() -> None:
            while not self.stopping.is_set():
                sent = time.time()
                status, body = send()
                answers.append(Answer(sent, status, body))
                self.stopping.wait(pause)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)


@contextlib.contextmanager
def running(load: Load) -> Iterator[Load]:
    try:
        yield load
    finally:
        load.stop()


def join(lab: Lab, fleet: str, settings: dict[str, Any]) -> tuple[Client, dict[str, Any]]:
    client = lab.client()
    status, body = client.register(fleet)
    assert status == 200, body
    client.up(body["config"])
    assert client.can_ping(settings["ip6"])
    return client, body


def pinger(client: Client, fleet: str, settings: dict[str, Any]) -> Callable[[], tuple[int, Any]]:
    url = f"http://[{settings['ip6']}]:{HTTP_PORT}/fleet/{fleet}/ping"
    return lambda: client.namespace.http("POST", url, {})


def peers(lab: Lab, fleet: str) -> set[str]:
    return set(lab.server.run("wg", "show", f"wg_{fleet}", "peers").split())


def health(server: Server) -> tuple[int, Any]:
    return server.api("GET", "/health")


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own: stopping it must not disturb other tests."""
    problem = postgres_missing()
    if problem:
        if REQUIRED:
            pytest.fail(f"WG_FLEET_REQUIRE_E2E=1 but {problem}")
        pytest.skip(problem)
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


def test_postgresql_down_for_30_s_under_pings_and_registrations(
    lab: Lab, postgres: PostgresServer
) -> None:
    database = postgres.create_database()
    fleet = unique("p")
    settings = fleet_config(fleet, 6)
    server = Server(
        lab,
        {
            "domain": "fleet.test",
            "prune_timeout": "30m",
            "prune_interval": "2s",
            "database": postgres.url(database),
            "fleets": {fleet: settings},
        },
    )
    server.start()
    clients = [join(lab, fleet, settings) for _ in range(2)]
    registrar = lab.client()

    pings = Load()
    registrations = Load()
    with running(pings), running(registrations):
        for number, (client, _) in enumerate(clients):
            pings.add(f"ping{number}", pinger(client, fleet, settings), 0.3)
        registrations.add("register", lambda: registrar.register(fleet), 0.3)
        time.sleep(3)

        postgres.pause()  # returns once the server has stopped
        down = time.time()
        wait_for(
            lambda: (
                (answer := health(server))[0] == 503
                and any("the database does not answer" in p for p in answer[1]["problems"])
            ),
            10,
            "/health to name the database",
        )
        time.sleep(max(0.0, down + OUTAGE_SECONDS - 2 - time.time()))
        pings.stop()  # the last pings answered from memory, during the outage
        last_pings = {
            name: max(a.sent for a in answers if a.status == 200)
            for name, answers in pings.answers.items()
        }
        time.sleep(max(0.0, down + OUTAGE_SECONDS - time.time()))

        resuming = time.time()  # PostgreSQL may answer before `pg_ctl start` returns
        postgres.resume()
        up = time.time()

        def recovered() -> bool:
            later = [a for a in registrations.answers["register"] if a.sent > up]
            return health(server)[0] == 200 and any(a.status == 200 for a in later)

        wait_for(recovered, RECOVERY_SECONDS, "the node to recover by itself")
        recovery = time.time() - up
        time.sleep(2)
    assert server.process is not None
    assert server.process.poll() is None  # never restarted

    # Registrations: 200 or a 503 with a sentence, never anything else; 503 throughout
    # the outage (a request sent as the server stopped may still have made it).
    answers = registrations.answers["register"]
    assert {a.status for a in answers} <= {200, 503}, {a.status for a in answers}
    during = [a for a in answers if down < a.sent < resuming]
    assert during
    assert [(a.status, a.body) for a in during] == [(503, {"detail": UNAVAILABLE})] * len(during)
    # Pings of known clients: answered throughout, from memory while the database was down.
    for name, ping_answers in pings.answers.items():
        assert [a.status for a in ping_answers if a.status != 200] == [], name
        assert any(down < a.sent < resuming for a in ping_answers)
    assert recovery <= RECOVERY_SECONDS

    # Once back: every 200 registration is in the database and on the interface, and
    # the times of the pings answered from memory were written (none lost).
    accepted = {a.body["public_key"] for a in answers if a.status == 200}
    with psycopg.connect(postgres.url(database).replace("+psycopg", "")) as connection:
        rows = dict(
            connection.execute(
                "SELECT public_key, last_seen FROM clients WHERE fleet = %s", (fleet,)
            ).fetchall()
        )
    assert accepted <= set(rows)
    wait_for(lambda: peers(lab, fleet) == set(rows), 10, "the interface to equal the database")
    for number, (_, body) in enumerate(clients):
        stored = rows[body["public_key"]].replace(tzinfo=UTC)
        sent = datetime.fromtimestamp(last_pings[f"ping{number}"], UTC)
        assert stored >= sent.replace(microsecond=0), (stored, sent)
    # An outage is expected: logged in sentences, without a traceback.
    assert "Traceback" not in server.output()


def test_sqlite_on_a_full_filesystem(lab: Lab, tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        _full_filesystem(lab, mount)
    finally:
        for server in lab.servers:
            if server.process is not None:
                server.stop()
        subprocess.run(["umount", str(mount)], check=False)


def _full_filesystem(lab: Lab, mount: Path) -> None:
    fleet = unique("q")
    settings = fleet_config(fleet, 7)
    database = mount / "clients.db"
    server = Server(
        lab,
        {
            "domain": "fleet.test",
            "prune_timeout": "30m",
            "prune_interval": "2s",
            "database": str(database),
            "fleets": {fleet: settings},
        },
    )
    server.start()
    client, _ = join(lab, fleet, settings)
    registrar = lab.client()

    filler = mount / "filler"
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()

    statuses = []
    for _ in range(300):
        status, body = registrar.register(fleet)
        statuses.append(status)
        if status == 503:
            assert body == {"detail": FULL}
            break
    assert statuses[-1] == 503, statuses
    assert set(statuses) <= {200, 503}
    # A few more while full: each refused, none leaves a peer without a row.
    for _ in range(3):
        status, body = registrar.register(fleet)
        assert (status, body) == (503, {"detail": FULL})

    def rows() -> set[str]:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            return {key for (key,) in db.execute("SELECT public_key FROM clients")}

    assert peers(lab, fleet) <= rows()
    # Pings of a known client still answer while the disk is full.
    url = f"http://[{settings['ip6']}]:{HTTP_PORT}/fleet/{fleet}/ping"
    assert client.namespace.http("POST", url, {})[0] == 200

    filler.unlink()
    wait_for(lambda: registrar.register(fleet)[0] == 200, 10, "registrations to work again")
    wait_for(lambda: peers(lab, fleet) == rows(), 10, "the interface to equal the database")
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert server.process is not None
    assert server.process.poll() is None  # never restarted
    assert health(server)[0] == 200

"""hosts.py: rendering the hosts file and writing it from a real SQLite database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import delete, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from database import Client, Database
from hosts import Publisher, fqdn, render_hosts

T = TypeVar("T")

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def client(fleet: str, address: str, hostname: str | None, number: int) -> Client:
    return Client(
        fleet=fleet,
        address=address,
        public_key=f"key-{number}",
        hostname=hostname,
        requested_hostname=hostname,
        source_ip="192.0.2.50",
        registered_at=NOW,
        last_seen=NOW,
        last_active=NOW,
    )


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(str(tmp_path / "clients.db"))
    db.migrate()
    yield db
    db.close()


async def insert(database: Database, *rows: Client) -> None:
    def job(session: Session) -> None:
        session.add_all(rows)
        session.commit()

    await database.write(job)


async def execute(database: Database, statement: Executable) -> None:
    def job(session: Session) -> None:
        session.execute(statement)
        session.commit()

    await database.write(job)


def hosts_file(path: Path, database: Database) -> Publisher:
    return Publisher(path, database, ["alpha", "beta"], "fleet.test")


# --- render_hosts ------------------------------------------------------------------------


def test_fqdn() -> None:
    assert fqdn("excavator2", "southeast", "icpcnet.internal") == (
        "excavator2.southeast.icpcnet.internal"
    )


def test_render_empty() -> None:
    assert render_hosts([], "fleet.test") == ""


def test_render_sorts_numerically_by_address() -> None:
    entries = [
        ("alpha", "fd00:1::10", "ten"),
        ("alpha", "fd00:1::9", "nine"),
        ("beta", "fd00:2::1", "other"),
        ("alpha", "fd00:1::a", "hex-a"),
        ("alpha", "fd00:1::1:0", "big"),
    ]
    assert render_hosts(entries, "fleet.test") == (
        "fd00:1::9 nine.alpha.fleet.test\n"
        "fd00:1::a hex-a.alpha.fleet.test\n"
        "fd00:1::10 ten.alpha.fleet.test\n"
        "fd00:1::1:0 big.alpha.fleet.test\n"
        "fd00:2::1 other.beta.fleet.test\n"
    )


def test_render_writes_addresses_as_stored_in_numeric_order() -> None:
    # The database holds canonical addresses (wg-fleet writes them); render keeps them.
    entries = [("alpha", "fd00:1::1:0", "b"), ("alpha", "fd00:1::ffff", "a")]
    assert render_hosts(entries, "d.test") == (
        "fd00:1::ffff a.alpha.d.test\nfd00:1::1:0 b.alpha.d.test\n"
    )


# --- Publisher ---------------------------------------------------------------------------


async def test_writes_configured_fleets_with_mode_0644(tmp_path: Path, database: Database) -> None:
    await insert(
        database,
        client("alpha", "fd00:1::10", "excavator", 1),
        client("alpha", "fd00:1::9", "digger", 2),
        client("alpha", "fd00:1::3", None, 3),  # no name: no line
        client("beta", "fd00:2::2", "excavator", 4),
        client("gamma", "fd00:3::2", "gone", 5),  # a fleet no longer configured
    )
    path = tmp_path / "run" / "hosts"
    await hosts_file(path, database).refresh()
    assert path.read_text(encoding="utf-8") == (
        "fd00:1::9 digger.alpha.fleet.test\n"
        "fd00:1::10 excavator.alpha.fleet.test\n"
        "fd00:2::2 excavator.beta.fleet.test\n"
    )
    assert path.stat().st_mode & 0o7777 == 0o644


async def test_no_named_clients_writes_an_empty_file(tmp_path: Path, database: Database) -> None:
    await insert(database, client("alpha", "fd00:1::3", None, 1))
    path = tmp_path / "hosts"
    await hosts_file(path, database).refresh()
    assert path.read_text(encoding="utf-8") == ""


async def test_unchanged_content_is_not_rewritten(tmp_path: Path, database: Database) -> None:
    await insert(database, client("alpha", "fd00:1::2", "excavator", 1))
    path = tmp_path / "hosts"
    hosts = hosts_file(path, database)
    await hosts.refresh()
    inode = path.stat().st_ino
    await hosts.refresh()
    assert path.stat().st_ino == inode

    await execute(database, update(Client).values(hostname="digger"))
    await hosts.refresh()
    assert path.stat().st_ino != inode
    assert path.read_text(encoding="utf-8") == "fd00:1::2 digger.alpha.fleet.test\n"


async def test_concurrent_refreshes_end_with_the_latest_content(
    tmp_path: Path, database: Database
) -> None:
    await insert(database, client("alpha", "fd00:1::2", "old", 1))
    path = tmp_path / "hosts"
    hosts = hosts_file(path, database)

    async def rename_then_refresh() -> None:
        await execute(database, update(Client).values(hostname="new"))
        await hosts.refresh()

    await asyncio.gather(*(hosts.refresh() for _ in range(9)), rename_then_refresh())
    assert path.read_text(encoding="utf-8") == "fd00:1::2 new.alpha.fleet.test\n"


class GatedDatabase:
    """A real database whose first read, once done, returns only when the test opens the gate."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.reads = 0
        self.reading = asyncio.Event()
        self.gate = asyncio.Event()

    async def read(self, job: Callable[[Session], T]) -> T:
        self.reads += 1
        result = await self.database.read(job)
        if self.reads == 1:
            self.reading.set()
            await self.gate.wait()
        return result


async def test_refreshes_during_a_write_coalesce_into_one_more(
    tmp_path: Path, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await insert(database, client("alpha", "fd00:1::2", "old", 1))
    gated = GatedDatabase(database)
    path = tmp_path / "hosts"
    hosts = Publisher(path, gated, ["alpha"], "fleet.test")  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="hosts")

    first = asyncio.create_task(hosts.refresh())
    await gated.reading.wait()
    await execute(database, update(Client).values(hostname="new"))  # after the first read
    # Made while the first write is under way: they return at once and leave one rerun.
    await asyncio.gather(*(hosts.refresh() for _ in range(10)))
    gated.gate.set()
    await first

    assert path.read_text(encoding="utf-8") == "fd00:1::2 new.alpha.fleet.test\n"
    assert gated.reads == 2
    writes = [r for r in caplog.records if r.name == "hosts" and r.message.startswith("wrote")]
    assert len(writes) == 2  # "old" from the first pass, then "new" from the one rerun


async def test_concurrent_refreshes_after_a_delete(tmp_path: Path, database: Database) -> None:
    await insert(
        database,
        client("alpha", "fd00:1::2", "stays", 1),
        client("alpha", "fd00:1::3", "leaves", 2),
    )
    path = tmp_path / "hosts"
    hosts = hosts_file(path, database)
    await hosts.refresh()
    assert "leaves" in path.read_text(encoding="utf-8")
    await execute(database, delete(Client).where(Client.hostname == "leaves"))
    await asyncio.gather(*(hosts.refresh() for _ in range(10)))
    assert path.read_text(encoding="utf-8") == "fd00:1::2 stays.alpha.fleet.test\n"


async def test_unwritable_path_logs_and_does_not_raise(
    tmp_path: Path, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await insert(database, client("alpha", "fd00:1::2", "excavator", 1))
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be\n", encoding="utf-8")
    path = blocker / "hosts"
    hosts = hosts_file(path, database)
    with caplog.at_level(logging.ERROR, logger="hosts"):
        await hosts.refresh()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "hosts"]
    assert len(errors) == 1
    assert str(path) in errors[0].getMessage()
    assert not path.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # The next refresh tries again: once the path is usable the file appears.
    blocker.unlink()
    await hosts.refresh()
    assert path.read_text(encoding="utf-8") == "fd00:1::2 excavator.alpha.fleet.test\n"

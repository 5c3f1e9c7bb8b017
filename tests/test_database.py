"""The client table's invariants, enforced by the database itself."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from database import Client, Database, database_url

NOW = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)


pytestmark = pytest.mark.both_backends

# What wg-fleet 0.1 created (SQLAlchemy's create_all, before migrations existed).
SCHEMA_0_1 = """
CREATE TABLE clients (
    id INTEGER NOT NULL, fleet VARCHAR(32) NOT NULL, address VARCHAR(39) NOT NULL,
    public_key VARCHAR(44) NOT NULL, hostname VARCHAR(63), requested_hostname VARCHAR(63),
    source_ip VARCHAR(45) NOT NULL, registered_at DATETIME NOT NULL,
    last_seen DATETIME NOT NULL, last_handshake DATETIME, last_active DATETIME NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_clients_fleet_address UNIQUE (fleet, address),
    CONSTRAINT uq_clients_fleet_hostname UNIQUE (fleet, hostname),
    UNIQUE (public_key)
);
CREATE INDEX ix_clients_fleet_last_active ON clients (fleet, last_active);
INSERT INTO clients VALUES (1, 'alpha', 'fd00:1::2', 'k', 'excavator', 'excavator',
    '192.0.2.1', '2026-03-01 08:30:00.000000', '2026-03-01 08:30:00.000000', NULL,
    '2026-03-01 08:30:00.000000');
"""


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    instance = Database(database_url)
    instance.migrate()
    yield instance
    instance.close()


def client(**fields: Any) -> Client:
    values: dict[str, Any] = {
        "fleet": "alpha",
        "address": "fd00:1::2",
        "public_key": "k" * 43 + "=",
        "source_ip": "192.0.2.1",
        "registered_at": NOW,
        "last_seen": NOW,
        "last_active": NOW,
    }
    values.update(fields)
    return Client(**values)


def add(session: Session, *rows: Client) -> None:
    session.add_all(rows)
    session.commit()


def test_the_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "clients.db"
    db = Database(str(path))
    db.migrate()
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
        with db.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    finally:
        db.close()


def test_a_database_from_before_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "clients.db"
    with sqlite3.connect(path) as old:
        old.executescript(SCHEMA_0_1)
    db = Database(str(path))
    db.migrate()
    db.migrate()  # a second start finds nothing to do
    try:
        with db.engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == "0003"
            row = connection.execute(text("SELECT address, hostname, labels FROM clients")).one()
            assert tuple(row) == ("fd00:1::2", "excavator", None)
            check = connection.execute(text("PRAGMA integrity_check")).scalar_one()
            assert check == "ok"
    finally:
        db.close()


def test_migrate_creates_the_schema_from_nothing(db: Database) -> None:
    with db.engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version"))
        assert version.scalar_one() == "0003"


async def test_times_come_back_as_aware_utc(db: Database) -> None:
    eastern = timezone(timedelta(hours=-5))
    await db.write(lambda s: add(s, client(last_seen=NOW.astimezone(eastern))))
    row = await db.read(lambda s: s.scalars(select(Client)).one())
    assert row.last_seen == NOW
    assert row.last_seen.tzinfo is UTC
    assert row.last_handshake is None


async def test_naive_times_are_refused(db: Database) -> None:
    with pytest.raises(StatementError, match="naive datetimes are not stored"):
        await db.write(lambda s: add(s, client(last_seen=datetime(2026, 1, 1))))  # noqa: DTZ001


@pytest.mark.parametrize(
    "duplicate",
    [
        {"public_key": "x" * 43 + "="},  # same fleet and address
        {"address": "fd00:1::3"},  # same public key
        {"address": "fd00:1::3", "public_key": "y" * 43 + "=", "hostname": "taken"},
    ],
)
async def test_unique_constraints_guard_addresses_keys_and_names(
    db: Database, duplicate: dict[str, Any]
) -> None:
    await db.write(lambda s: add(s, client(hostname="taken")))
    with pytest.raises(IntegrityError):
        await db.write(lambda s: add(s, client(**duplicate)))


async def test_the_same_address_and_name_may_exist_in_two_fleets(db: Database) -> None:
    await db.write(
        lambda s: add(
            s,
            client(hostname="one"),
            client(fleet="beta", public_key="z" * 43 + "=", hostname="one"),
            client(address="fd00:1::9", public_key="w" * 43 + "="),
            client(address="fd00:1::a", public_key="v" * 43 + "="),
        )
    )
    count = await db.read(lambda s: len(s.scalars(select(Client)).all()))
    assert count == 4  # and unnamed clients never collide on their NULL hostnames


def test_database_urls() -> None:
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("/var/lib/wg-fleet/clients.db") == "sqlite:////var/lib/wg-fleet/clients.db"

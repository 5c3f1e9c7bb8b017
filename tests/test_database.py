"""The client table's invariants, enforced by the database itself."""

from __future__ import annotations

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


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(str(tmp_path / "state" / "clients.db"))
    database.create_schema()
    yield database
    database.close()


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


def test_the_file_is_private_and_in_wal_mode(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "state" / "clients.db"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    with db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"


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

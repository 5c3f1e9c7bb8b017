"""The client table and the engine that stores it.

The database is the source of truth for which peers exist. Its UNIQUE constraints are
the real guard against two clients sharing an address, a hostname or a key. Writes go
through one worker thread, so they are serialised without holding up the event loop;
reads use a small pool of their own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Dialect,
    Engine,
    Index,
    String,
    Table,
    UniqueConstraint,
    case,
    create_engine,
    delete,
    event,
    false,
    select,
)
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from errors import ClientNotFound, DatabaseUnavailable
from migrations import upgrade

T = TypeVar("T")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns timezone-aware UTC, on every backend alike."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware ones")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def text(length: int) -> String:
    """A string column compared byte by byte on every backend (PostgreSQL's default
    collations would order prefixes and base64 keys differently from SQLite)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class Base(DeclarativeBase):
    pass


class Client(Base):
    """One registered WireGuard peer. Its private key is never stored."""

    __tablename__ = "clients"
    __table_args__ = (
        UniqueConstraint("public_key", name="uq_clients_public_key"),
        UniqueConstraint("fleet", "address", name="uq_clients_fleet_address"),
        UniqueConstraint("fleet", "hostname", name="uq_clients_fleet_hostname"),
        Index("ix_clients_fleet_last_active", "fleet", "last_active"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    fleet: Mapped[str] = mapped_column(text(32))
    address: Mapped[str] = mapped_column(text(39))
    public_key: Mapped[str] = mapped_column(text(44))
    hostname: Mapped[str | None] = mapped_column(text(63))
    requested_hostname: Mapped[str | None] = mapped_column(text(63))
    source_ip: Mapped[str] = mapped_column(text(45))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Latest of registration and ping; handshakes are kept apart in last_handshake.
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_handshake: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Latest of last_seen and last_handshake, kept so that activity can be indexed.
    last_active: Mapped[datetime] = mapped_column(UTCDateTime())
    # What the client declared in its pings (see labels.py); NULL when none.
    labels: Mapped[dict[str, str] | None] = mapped_column(JSON(none_as_null=True))
    # Whether the last `online`/`offline` event said online (events.py), so a transition
    # is reported once, also across a restart.
    reported_online: Mapped[bool] = mapped_column(default=False, server_default=false())


def database_url(database: str) -> str:
    """A SQLAlchemy URL for `database`, which is a URL already or an SQLite file path."""
    if "://" in database:
        return database
    return f"sqlite:///{Path(database).absolute()}"


STATEMENT_CACHE = 32  # prepared statements kept per SQLite connection


def _tune_sqlite(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(database: str) -> Engine:
    url = database_url(database)
    if url.startswith("sqlite:///"):
        directory = Path(url.removeprefix("sqlite:///")).parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
        # sqlite3 keeps up to `cached_statements` prepared statements per connection, and
        # every length of an IN list is a statement of its own (a large one takes tens of
        # KiB): at the default of 128 the pool's caches kept filling for half an hour of
        # churn. The hot statements are few and stay cached at 32.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "cached_statements": STATEMENT_CACHE},
        )
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(url, pool_pre_ping=True)


def is_full(cause: str) -> bool:
    """Whether a database error says its disk is full (SQLite's SQLITE_FULL, or ENOSPC)."""
    lowered = cause.lower()
    return "disk is full" in lowered or "no space left" in lowered


class Database:
    """An engine plus the threads that use it; `write` jobs run one at a time."""

    def __init__(self, database: str) -> None:
        self.engine = make_engine(database)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-write")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="db-read")

    def migrate(self) -> None:
        """Create or upgrade the schema (see `migrations.upgrade`)."""
        old_umask = os.umask(0o077)  # a new database file is created 0600
        try:
            upgrade(self.engine)
        finally:
            os.umask(old_umask)

    def _in_session(self, job: Callable[[Session], T]) -> T:
        try:
            with self._sessions() as session:
                return job(session)
        except (OperationalError, InterfaceError, PoolTimeout) as error:
            # The server is down, the connection was cut, the disk is full: the
            # operation did not happen, and says so in a sentence (503), not a 500.
            cause = " ".join(str(getattr(error, "orig", None) or error).split())[:300]
            raise DatabaseUnavailable(cause, full=is_full(cause)) from error

    async def write(self, job: Callable[[Session], T]) -> T:
        """Run `job(session)` on the writer thread; the job commits what it keeps.

        Raises `DatabaseUnavailable` when the database cannot be reached or cannot
        write (`read` alike)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._in_session, job)

    async def read(self, job: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._in_session, job)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()


# The table itself, for Core statements that update many rows in one executemany.
CLIENTS: Table = Client.__table__  # type: ignore[assignment]


def advanced(column: ColumnElement[datetime], moment: Any) -> ColumnElement[datetime]:
    """SQL for `max(column, moment)`: times only ever move forward (portable, no GREATEST)."""
    return case((column < moment, moment), else_=column)


def delete_client_at(
    session: Session, fleet: str, address: str, missing: str
) -> tuple[str, str | None]:
    """Delete the fleet's client at `address` (not committed); its (public key,
    hostname). Raises `ClientNotFound` with the sentence `missing` when there is none."""
    row = session.execute(
        select(CLIENTS.c.id, CLIENTS.c.public_key, CLIENTS.c.hostname).where(
            CLIENTS.c.fleet == fleet, CLIENTS.c.address == address
        )
    ).one_or_none()
    if row is None:
        raise ClientNotFound(missing)
    session.execute(delete(CLIENTS).where(CLIENTS.c.id == row.id))
    return row.public_key, row.hostname

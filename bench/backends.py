"""Where the benchmarked service keeps its clients: an SQLite file (the default) or a
database on a throwaway PostgreSQL cluster that the benchmark starts and removes.

Each backend hands out `database` values for wg-fleet's config (a file path or a
SQLAlchemy URL): a fresh empty database, a database to seed, and a fresh copy of a seeded
one for each repetition of the scale section.

The PostgreSQL cluster is the test suite's (`tests.postgres.PostgresServer`: Debian's
binaries, a Unix socket only, fsync off). Its databases here are set to
`synchronous_commit = on`: a commit is written to the operating system before it is
acknowledged, survives a crash of the database server but not of the machine — the same
promise as SQLite's WAL with `synchronous=NORMAL`, which wg-fleet uses.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.postgres import PostgresServer
from tests.postgres import missing as postgres_missing


class SQLiteBackend:
    name = "sqlite"

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)"

    def fresh(self, state: Path) -> str:
        return str(state / "clients.db")

    def seed_target(self, work: Path, size: int) -> str:
        return str(work / f"seed-{size}.db")

    def copy(self, seeded: str, state: Path) -> str:
        """A copy of the seeded file as `state`'s database, replacing the previous one."""
        database = state / "clients.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(seeded, database)
        return str(database)

    def close(self, work: Path) -> None:
        pass


class PostgresBackend:
    """A PostgreSQL cluster for this run; every database on it is gone with `close`."""

    name = "postgresql"

    def __init__(self) -> None:
        problem = postgres_missing()
        if problem:
            raise RuntimeError(f"--postgres: {problem}")
        self.server = PostgresServer()
        self.version = self._query("postgres", "SHOW server_version").split()[0]
        self._copies: dict[str, str] = {}  # state directory → its current database
        self._made = 0

    def _connect(self, database: str, **options: object):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(
            dbname=database, user="postgres", host=str(self.server.socket_dir), **options
        )

    def _query(self, database: str, statement: str) -> str:
        with self._connect(database) as connection:
            row = connection.execute(statement).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return str(row[0])

    def _admin(self, statement: str) -> None:
        with self._connect("postgres", autocommit=True) as connection:
            connection.execute(statement)  # type: ignore[arg-type]

    def _create(self, template: str | None = None) -> str:
        if template is None:
            name = self.server.create_database()
        else:
            self._made += 1
            name = f"{template}_copy{self._made}"
            self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        # Per-database settings are not copied from a template: set them on every one.
        self._admin(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
        setting = self._query(name, "SHOW synchronous_commit")
        if setting != "on":
            raise RuntimeError(f"synchronous_commit is {setting} on {name}, not on")
        return name

    def describe(self) -> str:
        return (
            f"PostgreSQL {self.version} (throwaway cluster on a Unix socket, "
            "synchronous_commit on, fsync off)"
        )

    def fresh(self, state: Path) -> str:
        return self.server.url(self._create())

    def seed_target(self, work: Path, size: int) -> str:
        return self.server.url(self._create())

    def copy(self, seeded: str, state: Path) -> str:
        """A new database cloned from the seeded one, replacing `state`'s previous copy."""
        previous = self._copies.pop(str(state), None)
        if previous is not None:
            self.server.drop_database(previous)
        template = make_url(seeded).database
        assert template, seeded
        name = self._create(template)
        self._copies[str(state)] = name
        return self.server.url(name)

    def close(self, work: Path) -> None:
        """Stop the cluster and remove it; its log is kept in `work` (see --keep)."""
        with contextlib.suppress(OSError):
            shutil.copyfile(self.server.root / "server.log", work / "postgresql.log")
        self.server.stop()  # the whole cluster, every database on it, its directory


Backend = SQLiteBackend | PostgresBackend

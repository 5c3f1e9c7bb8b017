"""A throwaway PostgreSQL server for the test session: Debian's binaries, a cluster in a
temp directory, reachable only through a Unix socket, removed afterwards."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

BIN = Path("/usr/lib/postgresql")


def binaries() -> Path | None:
    versions = sorted(BIN.glob("*/bin/initdb")) if BIN.exists() else []
    return versions[-1].parent if versions else None


def missing() -> str | None:
    if binaries() is None:
        return "PostgreSQL is not installed (scripts/setup --dev installs Debian's postgresql)"
    if os.geteuid() != 0:
        return "the PostgreSQL test server is started as the postgres user, which needs root"
    if shutil.which("runuser") is None:
        return "runuser is missing"
    return None


class PostgresServer:
    def __init__(self) -> None:
        bin_dir = binaries()
        assert bin_dir is not None
        self._bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="wg-fleet-pg-"))
        self.socket_dir = self.root / "socket"
        self.socket_dir.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.socket_dir, "postgres", "postgres")
        self.data = self.root / "data"
        self._as_postgres(
            str(self._bin / "initdb"),
            "-D",
            str(self.data),
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        )
        self._options = (
            f"-c listen_addresses='' -k {self.socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self.resume()

    def pause(self) -> None:
        """Stop the server as an operator would (`pg_ctl stop -m fast`), keeping its data."""
        self._as_postgres(
            str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
        )

    def resume(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        self._as_postgres(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            self._options,
            "-w",
            "-l",
            str(self.root / "server.log"),
            "start",
        )

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self.root,
        )

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(
            dbname="postgres", user="postgres", host=str(self.socket_dir), autocommit=True
        ) as connection:
            connection.execute(statement)  # type: ignore[arg-type]

    def create_database(self) -> str:
        name = f"wgfleet_{secrets.token_hex(4)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        self._as_postgres(
            str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
        )
        shutil.rmtree(self.root, ignore_errors=True)

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from config import Config, parse_config
from context import AppContext
from main import create_app
from tests.fakes import FakeClock, FakeWireGuard
from tests.postgres import PostgresServer
from tests.postgres import missing as postgres_missing

FLEET = "alpha"
FLEET_IP6 = "fd00:1::1"
FLEET_SUBNET = "fd00:1::/64"


REQUIRED = os.environ.get("WG_FLEET_REQUIRE_E2E") == "1"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked `both_backends` run every test on SQLite and on PostgreSQL."""
    if metafunc.definition.get_closest_marker("both_backends") and (
        "database_url" in metafunc.fixturenames
    ):
        metafunc.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
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


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the test's database lives: a temp SQLite file, or a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield str(tmp_path / "clients.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def make_config(tmp_path: Path, database_url: str) -> Callable[..., Config]:
    """A valid config with temp paths; keyword arguments replace top-level keys."""

    def build(**overrides: Any) -> Config:
        data: dict[str, Any] = {
            "domain": "fleet.test",
            "prune_timeout": "30m",
            "database": database_url,
            "hosts_file": str(tmp_path / "run" / "hosts"),
            "wireguard_dir": str(tmp_path / "wireguard"),
            "fleets": {
                FLEET: {
                    "ip6": FLEET_IP6,
                    "subnet": FLEET_SUBNET,
                    "external_ip": "192.0.2.1",
                    "port": 51820,
                },
                "beta": {
                    "ip6": "fd00:2::1",
                    "subnet": "fd00:2::/64",
                    "external_ip": "2001:db8::1",
                    "port": 51821,
                },
            },
        }
        data.update(overrides)
        return parse_config(data, "test.yaml")

    return build


@pytest.fixture
def fake_wg() -> FakeWireGuard:
    return FakeWireGuard()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Running:
    """A started app (lifespan entered) and ways to call it from chosen source addresses."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    @property
    def context(self) -> AppContext:
        context: AppContext = self.app.state.context
        return context

    def client(self, source: str = "192.0.2.50", server: str = "[::1]:8000") -> httpx.AsyncClient:
        """An HTTP client whose requests come from `source` and arrive at `server`."""
        transport = httpx.ASGITransport(app=self.app, client=(source, 40000))
        return httpx.AsyncClient(transport=transport, base_url=f"http://{server}")

    def in_tunnel(self, source: str, fleet_ip6: str = FLEET_IP6) -> httpx.AsyncClient:
        return self.client(source, f"[{fleet_ip6}]:8000")


@pytest.fixture
def start_app(
    make_config: Callable[..., Config], fake_wg: FakeWireGuard, clock: FakeClock
) -> Callable[..., Any]:
    """`async with start_app(**config_overrides) as running:` runs the lifespan."""

    @asynccontextmanager
    async def start(config: Config | None = None, **overrides: Any) -> AsyncIterator[Running]:
        app = create_app(config or make_config(**overrides), runner=fake_wg, clock=clock)
        async with app.router.lifespan_context(app):
            yield Running(app)

    return start

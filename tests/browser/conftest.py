"""A real uvicorn server on 127.0.0.1 and Debian's chromium driven by Playwright.

The app runs with the fake `wg` runner: these tests are about the dashboard, not
WireGuard. Playwright never downloads a browser here; without chromium or Playwright
the tests are skipped, unless WG_FLEET_REQUIRE_E2E=1 makes that a failure.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.orm import Session

from config import Config
from database import Client, Database
from main import create_app
from tests.fakes import FakeClock, FakeInterface, FakeWireGuard
from tests.test_listing import T0, client_row

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None  # type: ignore[assignment]

REQUIRED = os.environ.get("WG_FLEET_REQUIRE_E2E") == "1"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# The app's clock stands here while pages are looked at: an hour after start-up.
NOW = T0 + timedelta(hours=1)
MACHINES = ["excavator", "bulldozer", "crane", "loader", "grader", "dumper", "forklift", "drill"]


def browser_missing() -> str | None:
    if sync_playwright is None:
        return "Playwright for Python is not installed (pip install -r requirements-dev.txt)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: install Debian's chromium package (scripts/setup --dev)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped, so that Playwright's own event loop is gone before async tests run."""
    missing = browser_missing()
    if missing:
        if REQUIRED:
            pytest.fail(f"WG_FLEET_REQUIRE_E2E=1 but {missing}")
        pytest.skip(missing)
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def fleet_rows(count: int) -> list[Client]:
    """A plausible fleet: most machines named, some online, alive for every reason."""
    rows = []
    for n in range(count):
        machine = MACHINES[n % len(MACHINES)]
        number = n // len(MACHINES) + 1
        named = n % 5 != 4
        hostname = (machine if number == 1 else f"{machine}{number}") if named else None
        registered = NOW - timedelta(days=n % 9, hours=n % 13, minutes=n % 41 + 45)
        handshake = None
        if n % 3 == 0:  # online
            handshake = NOW - timedelta(seconds=5 + n % 170)
        elif n % 3 == 1 and n % 2:  # was online a while ago
            handshake = NOW - timedelta(minutes=4 + n % 20)
        last_seen = NOW - timedelta(minutes=n % 50) if n % 4 else registered
        source = f"198.51.100.{n % 250 + 1}" if n % 7 else f"2001:db8:{n % 97:x}::{n % 13 + 1:x}"
        rows.append(
            client_row(
                n,
                hostname=hostname,
                source_ip=source,
                registered_at=registered,
                last_seen=max(last_seen, registered),
                last_handshake=handshake,
            )
        )
    return rows


@dataclass
class LiveServer:
    url: str
    node: str
    rows: list[Client]
    fake_wg: FakeWireGuard
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
        assert not self.thread.is_alive(), "the uvicorn server did not stop"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def seed(config: Config, rows: Sequence[Client]) -> FakeWireGuard:
    """Store `rows` and put their peers, with their handshakes, on running fake interfaces.

    As after a restart of the service: the interfaces kept their peers and the
    database holds the handshakes the last pass saw.
    """
    database = Database(config.database)
    try:
        database.migrate()
        with Session(database.engine, expire_on_commit=False) as session:
            session.add_all(rows)
            session.commit()
    finally:
        database.close()
    fake_wg = FakeWireGuard()
    for fleet in config.fleets:
        fake_wg.interfaces[f"wg_{fleet}"] = FakeInterface()
    for row in rows:
        interface = fake_wg.interfaces[f"wg_{row.fleet}"]
        interface.peers[row.public_key] = f"{row.address}/128"
        if row.last_handshake is not None:
            interface.handshakes[row.public_key] = int(row.last_handshake.timestamp())
    return fake_wg


@pytest.fixture
def serve(make_config: Callable[..., Config]) -> Iterator[Callable[[Sequence[Client]], LiveServer]]:
    """`serve(rows)` starts the app on a free port with `rows` in its database."""
    started: list[LiveServer] = []

    def start(rows: Sequence[Client], **overrides: Any) -> LiveServer:
        # No pass while pages are looked at.
        config = make_config(prune_interval="1d", node="east-1", **overrides)
        fake_wg = seed(config, rows)
        clock = FakeClock(now=T0)
        app = create_app(config, runner=fake_wg, clock=clock)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, lifespan="on", log_level="warning", loop="asyncio")
        )
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
        )
        live = LiveServer(
            f"http://127.0.0.1:{port}", config.node, list(rows), fake_wg, server, thread, sock
        )
        started.append(live)
        thread.start()
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn has started")
        assert server.started, "the app did not start; see the log above"
        clock.now = NOW
        return live

    try:
        yield start
    finally:
        for live in started:
            live.stop()


def save(page: Any, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path

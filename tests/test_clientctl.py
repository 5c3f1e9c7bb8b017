"""`main.py clients list|remove` against a real uvicorn serving the app on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import uvicorn

from config import Config
from main import create_app, main
from tests.conftest import FLEET
from tests.fakes import FakeClock, FakeWireGuard
from tests.test_access import PASSWORD, password_hash  # noqa: F401 - a fixture


@contextlib.asynccontextmanager
async def serving(config: Config, fake_wg: FakeWireGuard, clock: FakeClock) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(config, runner=fake_wg, clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        await task
        sock.close()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = await asyncio.to_thread(main, ["clients", *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def config(make_config: Callable[..., Config], password_hash: str) -> Config:  # noqa: F811
    return make_config(admin={"username": "admin", "password_hash": password_hash})


async def test_list_and_remove(
    config: Config,
    fake_wg: FakeWireGuard,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WG_FLEET_USER", "admin")
    monkeypatch.setenv("WG_FLEET_PASSWORD", PASSWORD)
    async with serving(config, fake_wg, clock) as url, httpx.AsyncClient(base_url=url) as http:
        first = (await http.post(f"/fleet/{FLEET}/register")).json()
        second = (await http.post(f"/fleet/{FLEET}/register")).json()
        other = (await http.post("/fleet/beta/register")).json()
        status, table, _ = await cli(capsys, "list", "--url", url)
        assert status == 0
        header, *lines = table.strip().splitlines()
        assert header.split() == [
            "FLEET", "ADDRESS", "HOSTNAME", "ONLINE", "LAST_HANDSHAKE", "SOURCE_IP"
        ]  # fmt: skip
        assert sorted(line.split()[1] for line in lines) == sorted(
            c["address"] for c in (first, second, other)
        )
        status, out, _ = await cli(
            capsys, "list", "--fleet", FLEET, "--offline", "--json", "--url", url
        )
        assert status == 0
        assert sorted(c["address"] for c in json.loads(out)) == sorted(
            [first["address"], second["address"]]
        )
        status, out, _ = await cli(capsys, "remove", FLEET, first["address"], "--ban", "--url", url)
        assert (status, out.strip()) == (
            0, f"removed {first['address']} from fleet {FLEET} and banned its key"
        )  # fmt: skip
        status, out, _ = await cli(capsys, "list", "--fleet", FLEET, "--json", "--url", url)
        assert [c["address"] for c in json.loads(out)] == [second["address"]]
        status, _, err = await cli(capsys, "remove", FLEET, first["address"], "--url", url)
        assert status == 1
        assert err.startswith("clients: the server answered 404: No client with address")


async def test_wrong_credentials_and_no_server_are_one_sentence(
    config: Config,
    fake_wg: FakeWireGuard,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WG_FLEET_USER", raising=False)
    monkeypatch.delenv("WG_FLEET_PASSWORD", raising=False)
    async with serving(config, fake_wg, clock) as url:
        status, _, err = await cli(capsys, "list", "--url", url)
    assert status == 1
    assert err.strip() == (
        "clients: the server answered 401: Admin credentials are required (HTTP Basic); "
        "set WG_FLEET_USER and WG_FLEET_PASSWORD."
    )
    status, _, err = await cli(capsys, "list", "--url", url)  # the server is gone now
    assert status == 1
    assert err.startswith(f"clients: cannot reach {url}")

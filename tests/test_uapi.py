"""Adding peers over the daemon's socket, and falling back to `wg` where there is none.

The daemon here is a stand-in speaking the protocol's framing; tests/e2e/test_uapi.py
proves the same against a real wireguard-go.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv6Address
from pathlib import Path

import pytest

import uapi
from command import CommandError
from tests.fakes import FakeInterface, FakeWireGuard
from wireguard import WireGuard, generate_keypair

FLEET = "alpha"


@asynccontextmanager
async def daemon(
    directory: Path, answer: bytes, per_connection: int = 1000
) -> AsyncIterator[list[tuple[int, bytes]]]:
    """A listener at `<directory>/wg_alpha.sock` that records (connection number,
    request) and answers each, closing a connection after `per_connection` requests."""
    requests: list[tuple[int, bytes]] = []
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        try:
            for _ in range(per_connection):
                requests.append((number, await reader.readuntil(b"\n\n")))
                writer.write(answer)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the client closed it
        finally:
            writer.close()

    server = await asyncio.start_unix_server(serve, path=directory / f"wg_{FLEET}.sock")
    try:
        yield requests
    finally:
        server.close()
        await server.wait_closed()


def peers(count: int) -> list[tuple[str, IPv6Address]]:
    return [
        (generate_keypair().public_key, IPv6Address(f"fd00:1::{n + 2:x}")) for n in range(count)
    ]


def test_the_request_carries_hex_keys_and_host_routes_only() -> None:
    key = generate_keypair().public_key
    request = uapi.add_peers_request([(key, IPv6Address("fd00:1::5"))]).decode()
    assert request == (
        f"set=1\npublic_key={base64.b64decode(key).hex()}\nallowed_ip=fd00:1::5/128\n\n"
    )


async def test_peers_go_over_one_kept_open_connection_without_a_process(
    tmp_path: Path,
) -> None:
    runner = FakeWireGuard()
    wireguard = WireGuard(runner, tmp_path, uapi_dir=tmp_path)
    first, second = peers(3), peers(2)
    async with daemon(tmp_path, b"errno=0\n\n") as requests:
        await wireguard.add_peers(FLEET, first)
        await wireguard.add_peers(FLEET, second)
        wireguard.close()
    assert requests == [(1, uapi.add_peers_request(first)), (1, uapi.add_peers_request(second))]
    assert runner.calls == []


async def test_a_connection_the_daemon_closed_is_opened_again(tmp_path: Path) -> None:
    """A restarted daemon closes kept-open connections: the request goes on a new one."""
    wireguard = WireGuard(FakeWireGuard(), tmp_path, uapi_dir=tmp_path)
    first, second = peers(1), peers(1)
    async with daemon(tmp_path, b"errno=0\n\n", per_connection=1) as requests:
        await wireguard.add_peers(FLEET, first)
        await wireguard.add_peers(FLEET, second)
        wireguard.close()
    assert requests == [(1, uapi.add_peers_request(first)), (2, uapi.add_peers_request(second))]


async def test_a_refusal_is_a_command_error(tmp_path: Path) -> None:
    wireguard = WireGuard(FakeWireGuard(), tmp_path, uapi_dir=tmp_path)
    async with daemon(tmp_path, b"errno=-22\n\n"):
        with pytest.raises(CommandError, match=r"refused the peers \(errno=-22\)"):
            await wireguard.add_peers(FLEET, peers(1))
        wireguard.close()


async def test_a_daemon_that_never_answers_times_out(tmp_path: Path) -> None:
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the caller gives up and closes
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    server = await asyncio.start_unix_server(silent, path=tmp_path / f"wg_{FLEET}.sock")
    try:
        wireguard = WireGuard(FakeWireGuard(), tmp_path, timeout=0.05, uapi_dir=tmp_path)
        with pytest.raises(CommandError, match=r"did not answer within 0\.2 s"):
            await wireguard.add_peers(FLEET, peers(1))
        await asyncio.wait_for(hung_up.wait(), 10)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "leave",
    [lambda path: None, lambda path: path.touch()],
    ids=["no socket (kernel module)", "a stale socket file"],
)
async def test_without_a_daemon_wg_adds_the_peers(
    tmp_path: Path, leave: Callable[[Path], None]
) -> None:
    leave(tmp_path / f"wg_{FLEET}.sock")
    runner = FakeWireGuard(interfaces={f"wg_{FLEET}": FakeInterface()})
    wireguard = WireGuard(runner, tmp_path, uapi_dir=tmp_path)
    batch = peers(2)
    await wireguard.add_peers(FLEET, batch)
    assert runner.count("wg", "addconf") == 1
    assert set(runner.interfaces[f"wg_{FLEET}"].peers) == {key for key, _ in batch}

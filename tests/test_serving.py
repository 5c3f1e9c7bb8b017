"""The listening socket as clients meet it: kept-alive connections answer without delay."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import serving
from config import ListenConfig

REPO = Path(__file__).resolve().parents[1]
REQUESTS = 25


@pytest.fixture
def served_port(tmp_path: Path) -> Iterator[int]:
    """The port of a real wg-fleet process (fake `wg`) served by bind_socket + serve."""
    config = tmp_path / "config.yaml"
    fleet = {"ip6": "fd00:1::1", "subnet": "fd00:1::/64", "external_ip": "192.0.2.1"}
    config.write_text(
        yaml.safe_dump(
            {
                "domain": "t.test",
                "prune_timeout": "30m",
                "database": str(tmp_path / "clients.db"),
                "hosts_file": str(tmp_path / "hosts"),
                "wireguard_dir": str(tmp_path / "wireguard"),
                "fleets": {"alpha": {**fleet, "port": 51820}},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.serve_with_fake_wg", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield port
    finally:
        process.terminate()
        process.communicate(timeout=30)


def wait_until_serving(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
        finally:
            connection.close()
        time.sleep(0.05)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_kept_alive_requests_do_not_wait_for_delayed_acks(served_port: int, host: str) -> None:
    """A response written in two pieces must not wait ~40 ms for the client's delayed ACK
    (Nagle's algorithm): the accepted sockets need TCP_NODELAY."""
    wait_until_serving(served_port)
    connection = http.client.HTTPConnection(host, served_port, timeout=10)
    try:
        durations = []
        for _ in range(REQUESTS):
            started = time.perf_counter()
            connection.request("POST", "/fleet/alpha/register")
            response = response_of(connection)
            durations.append(time.perf_counter() - started)
            assert response["status"] == "success"
        # One connection throughout: http.client reconnects silently if the server closes.
        assert connection.sock is not None
    finally:
        connection.close()
    median_ms = statistics.median(durations) * 1000
    assert median_ms < 10, f"median {median_ms:.1f} ms over {REQUESTS} kept-alive requests"


def response_of(connection: http.client.HTTPConnection) -> dict[str, str]:
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200, body
    assert response.getheader("connection", "").lower() != "close"
    answer: dict[str, str] = json.loads(body)
    return answer


async def test_accepted_sockets_have_tcp_nodelay() -> None:
    """asyncio enables TCP_NODELAY only where the socket's protocol says TCP."""
    sock = serving.bind_socket(ListenConfig.model_construct(host="::", port=0))
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_connection(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connection, sock=sock)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        assert await asyncio.wait_for(accepted, 10) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_writes_of_one_loop_step_leave_as_one() -> None:
    inner = RecordingTransport()
    transport = serving.CoalescingTransport(inner)  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"{}")
    assert inner.writes == []
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    transport.write(b"more")
    transport.close()  # what is pending goes out before the close
    assert inner.writes[-1] == b"more"
    assert inner.closed
    assert transport.get_extra_info("peername") == "info:peername"

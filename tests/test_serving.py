"""The listening socket as clients meet it: kept-alive connections answer without delay."""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

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

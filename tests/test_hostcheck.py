"""hostcheck.py: DNS rebinding is closed — a request naming another host gets 400,
while every way wg-fleet is normally reached keeps working."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from database import Client
from hostcheck import split_host
from tests.conftest import FLEET, FLEET_IP6, Running

StartApp = Callable[..., Any]


async def call(
    running: Running, host: str | None, server: str = "[::1]:8000", path: str = "/api/fleets"
) -> httpx.Response:
    transport = httpx.ASGITransport(app=running.app, client=("192.0.2.50", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{server}") as http:
        headers = {"Host": host} if host is not None else {}
        if path.endswith("/register"):
            return await http.post(path, headers=headers)
        return await http.get(path, headers=headers)


async def count_clients(running: Running) -> int:
    return await running.context.database.read(
        lambda session: session.scalar(select(func.count(Client.id))) or 0
    )


REBOUND = ["evil.example", "evil.example:8000", "localhost.evil.example", "[::1].evil", "x:y"]


async def test_a_rebound_name_can_neither_register_nor_read(start_app: StartApp) -> None:
    async with start_app() as running:
        answers = {
            (host, path): await call(running, host, path=path)
            for host in REBOUND
            for path in ("/", f"/fleet/{FLEET}/register", "/api/fleets", "/openapi.json")
        }
        stored = await count_clients(running)
    assert {key: a.status_code for key, a in answers.items()} == dict.fromkeys(answers, 400)
    assert answers[("evil.example", "/api/fleets")].json() == {
        "detail": "This server does not answer to the host 'evil.example'; "
        "an operator can add it to allowed_hosts."
    }
    assert stored == 0


async def test_what_wg_fleet_knows_about_itself_is_admitted(start_app: StartApp) -> None:
    admitted = [
        "localhost",
        "localhost:8000",
        "LOCALHOST.",
        "127.0.0.1",
        "127.0.0.1:8000",
        "127.1.2.3:8000",
        "[::1]",
        "[::1]:8000",
        f"[{FLEET_IP6}]:8000",
        "[fd00:2::1]",  # the other fleet's ip6
        "192.0.2.1:8000",  # alpha's external_ip
        "[2001:db8::1]:8000",  # beta's external_ip
        socket.gethostname(),
        f"{socket.gethostname()}:8000",
        socket.getfqdn(),
    ]
    async with start_app() as running:
        answers = {host: await call(running, host) for host in admitted}
        no_host = await call(running, None)
    assert {h: a.status_code for h, a in answers.items()} == dict.fromkeys(admitted, 200)
    assert no_host.status_code == 200


async def test_the_address_a_request_arrived_at_is_admitted(start_app: StartApp) -> None:
    async with start_app() as running:
        own = await call(running, "198.51.100.7:8000", server="198.51.100.7:8000")
        own_v6 = await call(running, "[2001:db8:7::7]:8000", server="[2001:db8:7::7]:8000")
        other = await call(running, "203.0.113.1:8000", server="198.51.100.7:8000")
    assert (own.status_code, own_v6.status_code, other.status_code) == (200, 200, 400)


async def test_allowed_hosts_replaces_the_names(start_app: StartApp) -> None:
    hosts = ["wg.example.org", "*.fleet.example", "198.51.100.9"]
    async with start_app(allowed_hosts=hosts) as running:
        answers = {
            host: (await call(running, host)).status_code
            for host in [
                "wg.example.org:8000",
                "a.fleet.example",
                "198.51.100.9",
                "localhost",
                "[::1]:8000",
                "192.0.2.1",  # an external_ip: not listed any more
                "fleet.example",
                "evil.example",
            ]
        }
    assert answers == {
        "wg.example.org:8000": 200,
        "a.fleet.example": 200,
        "198.51.100.9": 200,
        "localhost": 200,
        "[::1]:8000": 200,
        "192.0.2.1": 400,
        "fleet.example": 400,
        "evil.example": 400,
    }


async def test_a_star_turns_the_check_off(start_app: StartApp) -> None:
    async with start_app(allowed_hosts=["*"]) as running:
        answer = await call(running, "evil.example")
    assert answer.status_code == 200


async def test_two_host_headers_are_refused(start_app: StartApp) -> None:
    async with start_app() as running:
        transport = httpx.ASGITransport(app=running.app, client=("192.0.2.50", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://[::1]:8000") as http:
            request = http.build_request("GET", "/api/fleets")
            request.headers = httpx.Headers([("host", "[::1]:8000"), ("host", "evil.example")])
            answer = await http.send(request)
    assert answer.status_code == 400


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("Example.ORG.:80", "example.org"),
        ("example.org", "example.org"),
        ("10.0.0.1:8000", "10.0.0.1"),
        ("[::1]x", None),
        ("[::1", None),
        ("host:port", None),
        ("", None),
    ],
)
def test_split_host(header: str, host: str | None) -> None:
    assert split_host(header) == host

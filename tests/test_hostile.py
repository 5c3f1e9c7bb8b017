"""Hostile input: every endpoint answers it with a 4xx and a sentence, never a 500.
Tests marked `both_backends` run on SQLite and on PostgreSQL.

Oversized, streamed and slow bodies, wrong JSON types and encodings, path tricks in
fleet names, unusual source address forms and malformed public keys; then schemathesis
over the OpenAPI schema, as an outside caller and as a caller inside a fleet's tunnel.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from config import Config
from database import Client, database_url
from limits import MAX_BODY
from main import create_app
from migrations import upgrade
from tests.conftest import FLEET, FLEET_IP6, Running
from tests.fakes import FakeClock, FakeWireGuard
from wireguard import generate_keypair

StartApp = Callable[..., Any]

TOO_LARGE = {"detail": f"The request body is larger than {MAX_BODY} bytes."}
OVERSIZED = b'{"hostname": "' + b"a" * (17 * 1024) + b'"}'


def refusal_problem(response: httpx.Response, *statuses: int) -> str | None:
    """None for a 4xx (one of `statuses` when given) that says why in a sentence (a JSON
    `detail`, or an HTML error page); else what is wrong with the answer."""
    status = response.status_code
    if not 400 <= status < 500 or (statuses and status not in statuses):
        return f"answered {status}, expected {statuses or '4xx'}: {response.text[:200]}"
    if response.headers.get("content-type", "").startswith("text/html"):
        shown = str(status) in response.text and "<p" in response.text
        return None if shown else f"an HTML {status} page that does not say why"
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return f"{status} without a JSON detail: {response.text[:200]}"
    if not isinstance(detail, str) or not detail.strip():
        return f"{status} whose detail is not a sentence: {detail!r}"
    return None


def assert_refused(response: httpx.Response, *statuses: int) -> None:
    problem = refusal_problem(response, *statuses)
    assert problem is None, problem


def assert_all_refused(answers: dict[str, httpx.Response], *statuses: int) -> None:
    """Every answer refused with a sentence; the failures are listed by case name."""
    problems = {
        name: problem
        for name, response in answers.items()
        if (problem := refusal_problem(response, *statuses)) is not None
    }
    assert problems == {}


async def rows(running: Running) -> list[Client]:
    return await running.context.database.read(
        lambda session: list(session.scalars(select(Client).order_by(Client.id)))
    )


async def register(running: Running, **body: Any) -> dict[str, Any]:
    async with running.client() as http:
        response = await http.post(f"/fleet/{FLEET}/register", json=body or None)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def chunks(data: bytes, size: int = 1024) -> AsyncIterator[bytes]:
    """A request body streamed in pieces, without a Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- bodies -----------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", f"/fleet/{FLEET}/register"),
    ("POST", f"/fleet/{FLEET}/ping"),
    ("GET", "/"),
    ("GET", f"/fleet/{FLEET}"),
    ("GET", "/api/fleets"),
    ("GET", f"/api/fleets/{FLEET}/clients"),
    ("GET", "/metrics"),
    ("GET", "/health"),
]


async def test_a_declared_oversized_body_is_refused_with_413(start_app: StartApp) -> None:
    async with start_app() as running:
        client = await register(running)
        async with running.in_tunnel(client["address"]) as http:
            answers = {
                f"{method} {path}": await http.request(
                    method, path, content=OVERSIZED, headers={"content-type": "application/json"}
                )
                for method, path in ENDPOINTS
            }
        stored = await rows(running)
    assert {name: (r.status_code, r.json()) for name, r in answers.items()} == {
        name: (413, TOO_LARGE) for name in answers
    }
    assert len(stored) == 1


@pytest.mark.parametrize("path", [f"/fleet/{FLEET}/register", f"/fleet/{FLEET}/ping"])
async def test_a_streamed_oversized_body_is_refused_with_413(
    start_app: StartApp, path: str
) -> None:
    """Chunked, so no Content-Length warns the server: the limit holds while reading."""
    async with start_app() as running:
        client = await register(running)
        async with running.in_tunnel(client["address"]) as http:
            response = await http.post(
                path, content=chunks(OVERSIZED), headers={"content-type": "application/json"}
            )
        stored = await rows(running)
    assert response.status_code == 413, response.text
    assert response.json() == TOO_LARGE
    assert len(stored) == 1


async def test_a_nonsense_content_length_is_refused(start_app: StartApp) -> None:
    async with start_app() as running, running.client() as http:
        answers = {
            length: await http.post(
                f"/fleet/{FLEET}/register", content=b"{}", headers={"content-length": length}
            )
            for length in ("abc", "-1", "1e3", " 2", "0x2", "99999999999999999999999")
        }
        stored = await rows(running)
    assert_all_refused(answers)
    assert stored == []


async def test_a_slow_body_holds_up_no_other_request(start_app: StartApp) -> None:
    release = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"public_'
        await release.wait()
        yield b'key": null}'

    async with start_app() as running, running.client() as http:
        slow = asyncio.create_task(
            http.post(
                f"/fleet/{FLEET}/register",
                content=trickle(),
                headers={"content-type": "application/json"},
            )
        )
        others = [
            await asyncio.wait_for(http.post(f"/fleet/{FLEET}/register"), 2),
            await asyncio.wait_for(http.get("/health"), 2),
            await asyncio.wait_for(http.get("/api/fleets"), 2),
        ]
        assert not slow.done()
        release.set()
        finished = await asyncio.wait_for(slow, 5)
        stored = await rows(running)
    assert [response.status_code for response in others] == [200, 200, 200]
    assert finished.status_code == 200, finished.text
    assert len(stored) == 2


BAD_REGISTER_BODIES = {
    "array": b"[]",
    "string": b'"text"',
    "number": b"1",
    "key a number": b'{"public_key": 5}',
    "key a list": b'{"public_key": ["a"]}',
    "key an object": b'{"public_key": {"a": 1}}',
    "key NaN": b'{"public_key": NaN}',
    "unknown field": b'{"publickey": "x"}',
    "lone surrogate": b'{"public_key": "\\ud800"}',
    "not JSON": b"public_key=abc",
    "truncated JSON": b'{"public_key": "abc',
    "invalid UTF-8": b'{"public_key": "\xff\xfe"}',
    "deeply nested": b"[" * 8000 + b"]" * 8000,
    "huge number": b'{"public_key": ' + b"9" * 5000 + b"}",
    "NUL bytes": b'{"public_key": "\x00\x00"}',
}


@pytest.mark.both_backends
async def test_register_refuses_bad_bodies_with_a_sentence(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running, running.client() as http:
        answers = {
            f"{name} as {content_type}": await http.post(
                f"/fleet/{FLEET}/register",
                content=body,
                headers={"content-type": content_type} if content_type else {},
            )
            for name, body in BAD_REGISTER_BODIES.items()
            for content_type in (
                "application/json",
                "text/plain",
                "application/x-www-form-urlencoded",
                None,
            )
        }
        stored = await rows(running)
    assert_all_refused(answers, 400, 422)
    assert stored == []
    assert fake_wg.interfaces["wg_alpha"].peers == {}


BAD_PING_BODIES = {
    "array": b"[]",
    "name a number": b'{"hostname": 5}',
    "name empty": b'{"hostname": ""}',
    "name upper case": b'{"hostname": "Excavator"}',
    "name with a dot": b'{"hostname": "a.b"}',
    "name with a space": b'{"hostname": "a b"}',
    "name with a newline": b'{"hostname": "a\\n"}',
    "name of 64 characters": b'{"hostname": "' + b"a" * 64 + b'"}',
    "name in unicode": '{"hostname": "ëxcavator"}'.encode(),
    "name with fullwidth letters": '{"hostname": "ｅｘ"}'.encode(),
    "name with NUL": b'{"hostname": "a\\u0000"}',
    "name as HTML": b'{"hostname": "<b>x</b>"}',
    "unknown field": b'{"name": "x"}',
    "invalid UTF-8": b'{"hostname": "\xc3\x28"}',
    "not JSON": b"hostname=x",
    "deeply nested": b"{" + b'"a":{' * 2500 + b"}" * 2501,
}


@pytest.mark.both_backends
async def test_ping_refuses_bad_bodies_with_a_sentence(start_app: StartApp) -> None:
    async with start_app() as running:
        client = await register(running)
        async with running.in_tunnel(client["address"]) as http:
            answers = {
                name: await http.post(
                    f"/fleet/{FLEET}/ping",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                for name, body in BAD_PING_BODIES.items()
            }
        stored = await rows(running)
    assert_all_refused(answers, 400, 422)
    assert [row.hostname for row in stored] == [None]


# --- paths and queries ------------------------------------------------------------------

FLEET_NAMES = {
    "dot dot slash": "..%2f..%2fetc%2fpasswd",
    "dot dot": "%2e%2e",
    "NUL": "%00",
    "NUL suffix": f"{FLEET}%00",
    "long": "a" * 5000,
    "unicode": "ålpha",
    "homoglyph": "аlpha",  # a Cyrillic а
    "invalid UTF-8": "%ff%fe",
    "upper case": FLEET.upper(),
    "HTML": "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "interface name": f"wg_{FLEET}",
    "percent": "%25",
}


@pytest.mark.both_backends
async def test_path_tricks_in_fleet_names_find_no_fleet(start_app: StartApp) -> None:
    async with start_app() as running:
        client = await register(running)
        answers: dict[str, httpx.Response] = {}
        async with running.in_tunnel(client["address"]) as http:
            for case, name in FLEET_NAMES.items():
                answers[f"register {case}"] = await http.post(f"/fleet/{name}/register")
                answers[f"ping {case}"] = await http.post(f"/fleet/{name}/ping", json={})
                answers[f"page {case}"] = await http.get(f"/fleet/{name}")
                answers[f"clients {case}"] = await http.get(f"/api/fleets/{name}/clients")
        stored = await rows(running)
    assert_all_refused(answers, 404, 405)
    assert [name for name, r in answers.items() if "<script>" in r.text] == []
    assert len(stored) == 1


QUERIES = {
    "q too long": "q=" + "a" * 101,
    "q with NUL": "q=%00",
    "q invalid UTF-8": "q=%ff",
    "q as HTML": "q=%3Cscript%3E",
    "cursor garbage": "cursor=%ff%fe",
    "cursor not base64 JSON": "cursor=bm90IGpzb24",
    "cursor too long": "cursor=" + "A" * 2000,
    "limit zero": "limit=0",
    "limit negative": "limit=-1",
    "limit text": "limit=ten",
    "limit huge": "limit=99999999999999999999999",
    "sort unknown": "sort=name;drop",
    "sort repeated": "sort=hostname&sort=address",
}


@pytest.mark.both_backends
async def test_listing_queries_never_fail(start_app: StartApp) -> None:
    async with start_app() as running:
        await register(running)
        async with running.client() as http:
            answers = {
                f"{path}?{query}": await http.get(f"{path}?{query}")
                for query in QUERIES.values()
                for path in (f"/api/fleets/{FLEET}/clients", f"/fleet/{FLEET}")
            }
    refused = {name: r for name, r in answers.items() if r.status_code != 200}
    assert_all_refused(refused, 400, 422)
    assert [name for name, r in answers.items() if "<script>" in r.text] == []


def cursor_of(payload: str | bytes) -> str:
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# (sort, cursor): cursors that decode, but to nothing `encode` could have made.
DAMAGED_CURSORS = {
    "deeply nested JSON": ("hostname", cursor_of(b"[" * 250)),
    "lone surrogate in a hostname": ("hostname", cursor_of('["hostname",0,["\\ud800",1],false]')),
    "NUL in a hostname": ("hostname", cursor_of('["hostname",0,["a\\u0000",1],false]')),
    "lone surrogate in an address": ("address", cursor_of('["address",0,["\\udfff",1],false]')),
    "id of 2^63": ("hostname", cursor_of(f'["hostname",1,[{2**63}],false]')),
    "id of 2^70": ("address", cursor_of(f'["address",0,["fd00:1::1",{2**70}],false]')),
    "id of -1": ("activity", cursor_of('["activity",0,["2026-01-01T00:00:00+00:00",-1],false]')),
    "time before year 1 in UTC": (
        "activity",
        cursor_of('["activity",0,["0001-01-01T00:00:00+23:59",1],false]'),
    ),
    "time after year 9999 in UTC": (
        "activity",
        cursor_of('["activity",0,["9999-12-31T23:59:59-23:59",1],false]'),
    ),
    "too long": ("hostname", cursor_of(f'["hostname",0,["{"a" * 400}",1],false]')),
}


@pytest.mark.both_backends
async def test_damaged_cursors_get_400_with_a_sentence(start_app: StartApp) -> None:
    async with start_app() as running:
        await register(running)
        async with running.client() as http:
            answers = {
                f"{name} at {path}": await http.get(path, params={"sort": sort, "cursor": cursor})
                for name, (sort, cursor) in DAMAGED_CURSORS.items()
                for path in (f"/api/fleets/{FLEET}/clients", f"/fleet/{FLEET}")
            }
            nul = await http.get(f"/api/fleets/{FLEET}/clients", params={"q": "a\x00b"})
    assert_all_refused(answers, 400)
    assert answers[f"id of 2^63 at /api/fleets/{FLEET}/clients"].json() == {
        "detail": "The cursor is not one this server handed out."
    }
    assert (nul.status_code, nul.json()) == (
        400,
        {"detail": "The search text must not hold NUL or unpaired surrogate characters."},
    )


# --- source addresses -------------------------------------------------------------------


async def ping_as(
    running: Running, source: str, server: str = FLEET_IP6, **headers: str
) -> httpx.Response:
    transport = httpx.ASGITransport(app=running.app, client=(source, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://[{server}]:8000") as http:
        return await http.post(f"/fleet/{FLEET}/ping", json={"hostname": "x"}, headers=headers)


def exploded_forms(address: str) -> list[str]:
    exploded = ipaddress.IPv6Address(address).exploded
    return [exploded, exploded.upper(), address.upper(), f"{address}%eth0", f"{exploded}%wg0"]


async def test_other_forms_of_a_registered_address_identify_the_same_client(
    start_app: StartApp,
) -> None:
    async with start_app() as running:
        client = await register(running)
        first = await ping_as(running, client["address"])
        others = [await ping_as(running, form) for form in exploded_forms(client["address"])]
        stored = await rows(running)
    assert first.json()["hostname"] == "x"
    for response in others:
        assert (response.status_code, response.json()["hostname"]) == (200, "x"), response.text
    assert [(row.address, row.hostname) for row in stored] == [(client["address"], "x")]


async def test_other_forms_of_the_fleet_address_are_the_fleet_address(
    start_app: StartApp,
) -> None:
    async with start_app() as running:
        client = await register(running)
        answers = [
            await ping_as(running, client["address"], server)
            for server in exploded_forms(FLEET_IP6)
        ]
    assert [response.status_code for response in answers] == [200] * len(answers)


UNUSUAL_SOURCES = {
    "IPv4-mapped": ("::ffff:192.0.2.5", 403),
    "IPv4-mapped subnet look-alike": ("::ffff:253.0.0.1", 403),
    "IPv4": ("192.0.2.5", 403),
    "loopback": ("::1", 403),
    "another fleet's subnet": ("fd00:2::5", 403),
    "the subnet's zero address": ("fd00:1::", 404),
    "the server's own address": (FLEET_IP6, 404),
    "unregistered in the subnet": ("fd00:1::dead:beef", 404),
    "not an address": ("testclient", 400),
    "empty": ("", 400),
    "bracketed garbage": ("[fd00:1::zz]", 400),
    "scope only": ("%eth0", 400),
}


@pytest.mark.both_backends
async def test_unusual_source_addresses_get_a_sentence(start_app: StartApp) -> None:
    async with start_app() as running:
        await register(running)
        answers = {
            name: await ping_as(running, source) for name, (source, _) in UNUSUAL_SOURCES.items()
        }
        stored = await rows(running)
    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == {name: status for name, (_, status) in UNUSUAL_SOURCES.items()}
    assert_all_refused(answers)
    assert [row.hostname for row in stored] == [None]


async def test_pings_ignore_forwarded_headers_even_from_trusted_proxies(
    start_app: StartApp,
) -> None:
    # A proxy cannot vouch for a tunnel: a ping is judged by its own connection alone.
    async with start_app(trusted_proxies=["fd00:1::10", "::1"]) as running:
        client = await register(running)
        spoofed = await ping_as(running, "fd00:1::99", **{"x-forwarded-for": client["address"]})
        from_proxy = await ping_as(running, "fd00:1::10", **{"x-forwarded-for": client["address"]})
        local = await ping_as(running, "::1", **{"x-forwarded-for": client["address"]})
        local_to_loopback = await ping_as(
            running, "::1", "::1", **{"x-forwarded-for": client["address"]}
        )
        garbage = await ping_as(running, client["address"], **{"x-forwarded-for": "not-an-address"})
        stored = await rows(running)
    assert_refused(spoofed, 404)  # judged by the real peer address, which is unregistered
    assert_refused(from_proxy, 404)
    assert_refused(local, 403)
    assert_refused(local_to_loopback, 403)
    assert garbage.status_code == 200  # the header is not even parsed
    assert [(row.address, row.hostname) for row in stored] == [(client["address"], "x")]


# --- public keys ------------------------------------------------------------------------

KEY = generate_keypair().public_key
MALFORMED_KEYS = {
    "not base64": "!!!not-base64!!!",
    "31 bytes": base64.b64encode(bytes(31)).decode(),
    "33 bytes": base64.b64encode(bytes(33)).decode(),
    "64 bytes": base64.b64encode(bytes(64)).decode(),
    "empty": "",
    "missing padding": KEY.rstrip("="),
    "extra padding": KEY + "==",
    "URL-safe alphabet": base64.urlsafe_b64encode(bytes([251] * 32)).decode(),
    "inner space": KEY[:20] + " " + KEY[20:],
    "inner newline": KEY[:20] + "\n" + KEY[20:],
    "unicode": "é" * 44,
    "fullwidth": "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in KEY),
    "hex": bytes(32).hex(),
    "config injection": KEY + "\nAllowedIPs = ::/0",
    "very long": "A" * 12000,
}


async def test_malformed_public_keys_get_422(start_app: StartApp, fake_wg: FakeWireGuard) -> None:
    async with start_app() as running, running.client() as http:
        answers = {
            name: await http.post(f"/fleet/{FLEET}/register", json={"public_key": key})
            for name, key in MALFORMED_KEYS.items()
        }
        stored = await rows(running)
    assert_all_refused(answers, 422)
    assert [n for n, r in answers.items() if "public_key" not in r.json()["detail"]] == []
    assert stored == []
    assert fake_wg.interfaces["wg_alpha"].peers == {}


async def test_a_key_with_surrounding_whitespace_is_stored_canonically(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running:
        answer = await register(running, public_key=f"  {KEY}\n")
        stored = await rows(running)
    assert answer["public_key"] == KEY
    assert [row.public_key for row in stored] == [KEY]
    assert list(fake_wg.interfaces["wg_alpha"].peers) == [KEY]


async def test_the_servers_own_public_key_cannot_be_registered(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    """WireGuard silently ignores a peer that has the interface's own key: the client would
    get "success" and a row, but never a peer, and every pass would "restore" it anew."""
    async with start_app() as running, running.client() as http:
        server_key = running.context.server_keys[FLEET]
        response = await http.post(f"/fleet/{FLEET}/register", json={"public_key": server_key})
        stored = await rows(running)
    assert_refused(response, 409, 422)
    assert stored == []


# --- schemathesis -----------------------------------------------------------------------

TUNNEL_CLIENT = "fd00:1::5"


class Caller:
    """Presents every HTTP request as coming from `client` and arriving at `server`,
    with the Host header a client dialling `server`'s address sends."""

    def __init__(self, app: ASGIApp, client: tuple[str, int], server: tuple[str, int]) -> None:
        self.app = app
        self.client = client
        self.server = server
        host = f"[{server[0]}]" if ":" in server[0] else server[0]
        self.host = f"{host}:{server[1]}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
            scope = {
                **scope,
                "client": self.client,
                "server": self.server,
                "headers": [(b"host", self.host), *headers],
            }
        await self.app(scope, receive, send)


def seed_tunnel_client(config: Config) -> None:
    """A registered client at TUNNEL_CLIENT, stored before the app starts (and restored
    to the interface by the start-up pass)."""
    engine = create_engine(database_url(config.database))
    try:
        upgrade(engine)  # the migrated schema, as the app makes it
        moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        with Session(engine) as session:
            session.add(
                Client(
                    fleet=FLEET,
                    address=TUNNEL_CLIENT,
                    public_key=generate_keypair().public_key,
                    source_ip="192.0.2.50",
                    registered_at=moment,
                    last_seen=moment,
                    last_active=moment,
                )
            )
            session.commit()
    finally:
        engine.dispose()


def api_schema(config: Config, client: tuple[str, int], server: tuple[str, int]) -> Any:
    seed_tunnel_client(config)
    app = create_app(config, runner=FakeWireGuard(), clock=FakeClock())
    return schemathesis.openapi.from_asgi("/openapi.json", Caller(app, client, server))


@pytest.fixture
def outside_schema(make_config: Callable[..., Config]) -> Any:
    return api_schema(make_config(), ("192.0.2.50", 40000), ("::1", 8000))


@pytest.fixture
def tunnel_schema(make_config: Callable[..., Config]) -> Any:
    return api_schema(make_config(), (TUNNEL_CLIENT, 40000), (FLEET_IP6, 8000))


CHECKS = [not_a_server_error, status_code_conformance]
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz(schema: Any) -> list[str]:
    """Valid and invalid cases for every operation, also aimed at a fleet that exists;
    return what ran. A failed check raises, naming the request that reproduces it."""
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        has_input = any(
            (operation.path_parameters, operation.query, operation.headers, operation.body)
        )
        real = {"fleet": FLEET} if "{fleet}" in operation.path else None
        runs = [(GenerationMode.POSITIVE, None)]
        if real:
            runs.append((GenerationMode.POSITIVE, real))
        if has_input:
            # Invalid input is refused before the fleet is looked up: aim it at a real one.
            runs.append((GenerationMode.NEGATIVE, real))
        for mode, fleet in runs:
            strategy = operation.as_strategy(mode, path_parameters=fleet)

            @FUZZ
            @given(case=strategy)
            def check(case: Any) -> None:
                case.call_and_validate(checks=CHECKS)

            check()
            ran.append(f"{mode.value} {operation.label}{' (real fleet)' if fleet else ''}")
    return ran


def test_schemathesis_as_an_outside_caller(outside_schema: Any) -> None:
    ran = fuzz(outside_schema)
    assert "positive POST /fleet/{fleet}/register (real fleet)" in ran


def test_schemathesis_as_a_caller_in_the_tunnel(tunnel_schema: Any) -> None:
    ran = fuzz(tunnel_schema)
    assert "positive POST /fleet/{fleet}/ping (real fleet)" in ran

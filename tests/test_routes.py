"""Register and ping through the HTTP API, asserting the answers and the stored rows."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from database import Client
from tests.conftest import FLEET, FLEET_IP6, FLEET_SUBNET, Running
from tests.fakes import FakeWireGuard
from wireguard import generate_keypair

pytestmark = pytest.mark.both_backends

StartApp = Callable[..., Any]


async def rows(running: Running) -> list[Client]:
    return await running.context.database.read(
        lambda session: list(session.scalars(select(Client).order_by(Client.id)))
    )


async def register(running: Running, source: str = "192.0.2.50", **body: Any) -> Any:
    async with running.client(source) as http:
        response = await http.post(f"/fleet/{FLEET}/register", json=body or None)
    assert response.status_code == 200, response.text
    return response.json()


async def test_register_returns_a_working_config_and_stores_the_client(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running:
        answer = await register(running, "::ffff:192.0.2.7")
        stored = await rows(running)
        server_key = running.context.server_keys[FLEET]

    address = ipaddress.IPv6Address(answer["address"])
    assert address in ipaddress.IPv6Network(FLEET_SUBNET)
    assert address not in (ipaddress.IPv6Address("fd00:1::"), ipaddress.IPv6Address("fd00:1::1"))
    private_key = answer["config"].split("PrivateKey = ")[1].split("\n")[0]
    assert answer["config"] == (
        "[Interface]\n"
        f"PrivateKey = {private_key}\n"
        f"Address = {address}/128\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {server_key}\n"
        "Endpoint = 192.0.2.1:51820\n"
        "AllowedIPs = fd00:1::1/128\n"
        "PersistentKeepalive = 25\n"
    )
    assert answer["status"] == "success"
    assert [(c.address, c.public_key, c.source_ip) for c in stored] == [
        (str(address), answer["public_key"], "192.0.2.7")
    ]
    assert fake_wg.interfaces["wg_alpha"].peers == {answer["public_key"]: f"{address}/128"}
    assert all(private_key not in (stdin or "") for stdin in fake_wg.stdins)


async def test_register_with_own_key_is_idempotent(start_app: StartApp, clock: Any) -> None:
    keys = generate_keypair()
    async with start_app() as running:
        first = await register(running, "192.0.2.8", public_key=keys.public_key)
        clock.advance(minutes=5)
        again = await register(running, "192.0.2.9", public_key=keys.public_key)
        stored = await rows(running)

    assert "PrivateKey" not in first["config"]
    assert again["address"] == first["address"]
    assert len(stored) == 1
    assert stored[0].source_ip == "192.0.2.9"
    # Registering again is not activity: only the tunnel (pings, handshakes) is.
    assert stored[0].last_seen == stored[0].last_active == clock.now - timedelta(minutes=5)


async def test_a_key_registered_in_another_fleet_is_refused(start_app: StartApp) -> None:
    keys = generate_keypair()
    async with start_app() as running, running.client() as http:
        await register(running, public_key=keys.public_key)
        response = await http.post("/fleet/beta/register", json={"public_key": keys.public_key})
    assert response.status_code == 409
    assert response.json() == {"detail": "This public key is already registered in fleet 'alpha'."}


async def test_a_malformed_key_gets_422_with_a_sentence(start_app: StartApp) -> None:
    async with start_app() as running, running.client() as http:
        response = await http.post(f"/fleet/{FLEET}/register", json={"public_key": "abc"})
        too_short = await http.post(
            f"/fleet/{FLEET}/register", json={"public_key": "AAAA" * 10 + "AA=="}
        )
        stored = await rows(running)
    assert response.status_code == 422
    assert response.json() == {
        "detail": "Invalid request: public_key: public_key is not valid base64; "
        "expected base64 of 32 bytes."
    }
    assert too_short.status_code == 422
    assert "decodes to 31 bytes instead of 32" in too_short.json()["detail"]
    assert stored == []


async def test_unknown_fleet_is_404(start_app: StartApp) -> None:
    async with start_app() as running, running.client() as http:
        response = await http.post("/fleet/nope/register")
    assert response.status_code == 404
    assert response.json() == {"detail": "There is no fleet named 'nope'."}


async def test_a_tiny_subnet_fills_up_and_then_answers_503(
    start_app: StartApp, make_config: Callable[..., Any], fake_wg: FakeWireGuard
) -> None:
    tiny = {"ip6": "fd00:9::1", "subnet": "fd00:9::/126", "external_ip": "192.0.2.1", "port": 1}
    async with start_app(fleets={FLEET: tiny}) as running, running.client() as http:
        answers = [await http.post(f"/fleet/{FLEET}/register") for _ in range(3)]
        stored = await rows(running)
    assert [a.status_code for a in answers] == [200, 200, 503]
    assert {a.json()["address"] for a in answers[:2]} == {"fd00:9::2", "fd00:9::3"}
    assert answers[2].json() == {"detail": "Fleet alpha has no free address left in fd00:9::/126."}
    assert len(stored) == 2
    assert len(fake_wg.interfaces["wg_alpha"].peers) == 2


async def test_when_wg_fails_nothing_is_left_behind(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running, running.client() as http:
        fake_wg.fail = {"addconf"}
        response = await http.post(f"/fleet/{FLEET}/register")
        stored = await rows(running)
    assert response.status_code == 503
    assert response.json() == {
        "detail": "WireGuard could not add the peer; nothing was registered. Try again later."
    }
    assert stored == []
    assert fake_wg.interfaces["wg_alpha"].peers == {}


async def test_bodies_over_16_kib_are_refused(start_app: StartApp) -> None:
    async with start_app() as running, running.client() as http:
        response = await http.post(
            f"/fleet/{FLEET}/register",
            content=b'{"public_key": "' + b"A" * 17000 + b'"}',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than 16384 bytes."}


async def test_ping_names_the_client_and_publishes_the_hosts_file(start_app: StartApp) -> None:
    async with start_app() as running:
        answer = await register(running)
        async with running.in_tunnel(answer["address"]) as tunnel:
            response = await tunnel.post(f"/fleet/{FLEET}/ping", json={"hostname": "excavator"})
            keep = await tunnel.post(f"/fleet/{FLEET}/ping", json={})
            empty = await tunnel.post(f"/fleet/{FLEET}/ping")
        hosts = running.context.config.hosts_file.read_text()
        stored = await rows(running)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "hostname": "excavator",
        "fqdn": "excavator.alpha.fleet.test",
        "labels": {},
    }
    assert keep.json()["hostname"] == empty.json()["hostname"] == "excavator"
    assert hosts == f"{answer['address']} excavator.alpha.fleet.test\n"
    assert (stored[0].hostname, stored[0].requested_hostname) == ("excavator", "excavator")


async def test_ping_without_a_name_answers_null(start_app: StartApp) -> None:
    async with start_app() as running:
        answer = await register(running)
        async with running.in_tunnel(answer["address"]) as tunnel:
            response = await tunnel.post(f"/fleet/{FLEET}/ping", json={})
    assert response.json() == {"status": "ok", "hostname": None, "fqdn": None, "labels": {}}


async def test_ping_refuses_callers_outside_the_tunnel(start_app: StartApp) -> None:
    async with start_app() as running:
        answer = await register(running)
        async with running.client("192.0.2.50") as outside:
            from_lan = await outside.post(f"/fleet/{FLEET}/ping", json={})
        async with running.client(answer["address"], "[fd00:1::99]:8000") as wrong_server:
            wrong_address = await wrong_server.post(f"/fleet/{FLEET}/ping", json={})
        async with running.in_tunnel("fd00:2::5", "fd00:2::1") as other_fleet:
            other = await other_fleet.post(f"/fleet/{FLEET}/ping", json={})
        async with running.client("::1") as loopback:
            forged = await loopback.post(
                f"/fleet/{FLEET}/ping",
                json={"hostname": "hijack"},
                headers={"X-Forwarded-For": answer["address"]},
            )
        stored = await rows(running)
    assert from_lan.status_code == 403
    assert from_lan.json() == {
        "detail": "Pings must come through the tunnel of fleet alpha: "
        "192.0.2.50 is not in fd00:1::/64."
    }
    assert wrong_address.status_code == 403
    assert wrong_address.json() == {
        "detail": "Pings must be sent to the fleet's address fd00:1::1 through the tunnel."
    }
    assert other.status_code == 403
    assert forged.status_code == 403
    assert stored[0].hostname is None


async def test_a_trusted_proxy_cannot_name_a_client(start_app: StartApp) -> None:
    # The old design skipped the destination check behind a trusted proxy, so any local
    # user could ping as any client; a ping's identity now comes from the tunnel alone.
    async with start_app(trusted_proxies=["::1"]) as running:
        answer = await register(running)
        async with running.client("::1", f"[{FLEET_IP6}]:8000") as proxy:
            response = await proxy.post(
                f"/fleet/{FLEET}/ping",
                json={"hostname": "viaproxy"},
                headers={"X-Forwarded-For": f"203.0.113.9, {answer['address']}"},
            )
        stored = await rows(running)
    assert response.status_code == 403, response.text
    assert response.json() == {
        "detail": "Pings must come through the tunnel of fleet alpha: ::1 is not in fd00:1::/64."
    }
    assert stored[0].hostname is None


async def test_ping_from_an_unregistered_address_is_404(start_app: StartApp) -> None:
    async with start_app() as running, running.in_tunnel("fd00:1::abcd") as tunnel:
        response = await tunnel.post(f"/fleet/{FLEET}/ping", json={})
    assert response.status_code == 404
    assert response.json() == {
        "detail": "No client with address fd00:1::abcd is registered in fleet alpha; "
        "register again."
    }


async def test_invalid_hostnames_get_422_with_what_is_allowed(start_app: StartApp) -> None:
    async with start_app() as running:
        answer = await register(running)
        async with running.in_tunnel(answer["address"]) as tunnel:
            answers = [
                await tunnel.post(f"/fleet/{FLEET}/ping", json={"hostname": name})
                for name in ("Excavator", "", "a" * 64, "a.b", 7)
            ]
            unknown_field = await tunnel.post(f"/fleet/{FLEET}/ping", json={"name": "x"})
    assert [a.status_code for a in answers] == [422] * 5
    assert answers[0].json() == {
        "detail": "Invalid request: hostname: "
        "hostname must be 1 to 63 characters from a-z, 0-9, _ and -."
    }
    assert unknown_field.json() == {"detail": "Invalid request: name: is not a known field."}


async def test_twenty_concurrent_pings_for_one_name_get_distinct_names(
    start_app: StartApp,
) -> None:
    async with start_app() as running:
        addresses = [(await register(running))["address"] for _ in range(20)]

        async def ping(address: str) -> str:
            async with running.in_tunnel(address) as tunnel:
                response = await tunnel.post(f"/fleet/{FLEET}/ping", json={"hostname": "node"})
            assert response.status_code == 200
            name: str = response.json()["hostname"]
            return name

        names = await asyncio.gather(*(ping(address) for address in addresses))
        hosts = running.context.config.hosts_file.read_text().splitlines()
    assert sorted(names) == sorted(["node"] + [f"node{n}" for n in range(2, 21)])
    assert len(hosts) == 20


async def test_a_renamed_holder_frees_the_name_and_the_numbered_client_is_promoted(
    start_app: StartApp,
) -> None:
    async with start_app() as running:
        first, second = (await register(running))["address"], (await register(running))["address"]
        async with running.in_tunnel(first) as a, running.in_tunnel(second) as b:
            await a.post(f"/fleet/{FLEET}/ping", json={"hostname": "excavator"})
            numbered = await b.post(f"/fleet/{FLEET}/ping", json={"hostname": "excavator"})
            await a.post(f"/fleet/{FLEET}/ping", json={"hostname": "loader"})
            promoted = await b.post(f"/fleet/{FLEET}/ping", json={"hostname": "excavator"})
    assert numbered.json()["hostname"] == "excavator2"
    assert promoted.json()["hostname"] == "excavator"


async def test_index_lists_every_fleet(start_app: StartApp) -> None:
    async with start_app() as running, running.client() as http:
        response = await http.get("/")
    assert response.status_code == 200
    assert "wg_alpha" in response.text
    assert "wg_beta" in response.text
    assert "[2001:db8::1]:51821" in response.text

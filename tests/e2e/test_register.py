"""Registration over a real network, proven by pinging through real wireguard-go tunnels."""

from __future__ import annotations

import ipaddress
import signal

from tests.e2e.harness import Lab, Server, fleet_config, unique


def test_two_clients_register_and_reach_the_fleet_through_their_tunnels(lab: Lab) -> None:
    fleet = unique("f")
    settings = fleet_config(fleet, 1)
    server = Server(
        lab, {"domain": "fleet.test", "prune_timeout": "30m", "fleets": {fleet: settings}}
    )
    server.start()
    first, second = lab.client(), lab.client()

    answers = []
    for client in (first, second):
        status, body = client.register(fleet)
        assert status == 200, body
        assert body["status"] == "success"
        assert f"Endpoint = {settings['external_ip']}:{settings['port']}" in body["config"]
        client.up(body["config"])
        assert client.can_ping(settings["ip6"])
        answers.append(body)

    addresses = {ipaddress.IPv6Address(answer["address"]) for answer in answers}
    assert len(addresses) == 2
    assert all(address in ipaddress.IPv6Network(settings["subnet"]) for address in addresses)
    peers = server.peers(fleet)
    assert peers == {answer["public_key"]: f"{answer['address']}/128" for answer in answers}
    # The server's own interface carries ip6 with the subnet's prefix length.
    shown = lab.server.run("ip", "-6", "addr", "show", "dev", f"wg_{fleet}")
    assert f"{settings['ip6']}/64" in shown

    # Ctrl-C to the service's whole process group leaves the interface and tunnels up.
    assert server.stop(signal.SIGINT) == 0
    assert lab.server.ok("ip", "link", "show", f"wg_{fleet}")
    assert first.can_ping(settings["ip6"], timeout=10)


def test_a_client_that_keeps_its_own_key_registers_idempotently(lab: Lab) -> None:
    fleet = unique("f")
    settings = fleet_config(fleet, 2, external_ip="fdfe::1")
    server = Server(
        lab, {"domain": "fleet.test", "prune_timeout": "30m", "fleets": {fleet: settings}}
    )
    server.start()
    client = lab.client()
    private_key = client.namespace.run("wg", "genkey").strip()
    public_key = client.namespace.run("wg", "pubkey", stdin=private_key).strip()

    status, body = client.register(fleet, {"public_key": public_key})
    assert status == 200, body
    assert "PrivateKey" not in body["config"]
    assert f"Endpoint = [fdfe::1]:{settings['port']}" in body["config"]
    again_status, again = client.register(fleet, {"public_key": public_key})
    assert again_status == 200
    assert again["address"] == body["address"]

    config = body["config"].replace("[Interface]\n", f"[Interface]\nPrivateKey = {private_key}\n")
    client.up(config)
    assert client.can_ping(settings["ip6"])
    assert private_key not in server.output()
    assert server.peers(fleet) == {public_key: f"{body['address']}/128"}

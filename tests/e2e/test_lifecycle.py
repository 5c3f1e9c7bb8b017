"""Pings, hostnames, the hosts file, restarts and pruning, over real wireguard-go tunnels."""

from __future__ import annotations

import signal
import sqlite3
from typing import Any

from tests.e2e.harness import HTTP_PORT, Client, Lab, Server, fleet_config, unique, wait_for


def start(lab: Lab, **overrides: Any) -> tuple[Server, str, dict[str, Any]]:
    fleet = unique("f")
    settings = fleet_config(fleet, 3)
    config = {"domain": "fleet.test", "prune_timeout": "30m", "fleets": {fleet: settings}}
    config.update(overrides)
    server = Server(lab, config)
    server.start()
    return server, fleet, settings


def join(lab: Lab, fleet: str, settings: dict[str, Any]) -> tuple[Client, dict[str, Any]]:
    client = lab.client()
    status, body = client.register(fleet)
    assert status == 200, body
    client.up(body["config"])
    assert client.can_ping(settings["ip6"])
    return client, body


def ping(client: Client, fleet: str, settings: dict[str, Any], body: Any = None) -> tuple[int, Any]:
    """A ping sent through the tunnel to the fleet's own address."""
    url = f"http://[{settings['ip6']}]:{HTTP_PORT}/fleet/{fleet}/ping"
    return client.namespace.http("POST", url, body if body is not None else {})


def stored_addresses(server: Server, fleet: str) -> set[str]:
    with sqlite3.connect(f"file:{server.database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT address FROM clients WHERE fleet = ?", (fleet,))
        return {address for (address,) in rows}


def test_clients_get_distinct_names_published_in_the_hosts_file(lab: Lab) -> None:
    server, fleet, settings = start(lab)
    members = [join(lab, fleet, settings) for _ in range(3)]

    names = []
    for client, _ in members:
        status, answer = ping(client, fleet, settings, {"hostname": "excavator"})
        assert status == 200, answer
        names.append(answer["hostname"])
        assert answer["fqdn"] == f"{answer['hostname']}.{fleet}.fleet.test"
    assert names == ["excavator", "excavator2", "excavator3"]

    expected = "".join(
        f"{body['address']} {name}.{fleet}.fleet.test\n"
        for name, (_, body) in sorted(
            zip(names, members, strict=True), key=lambda p: p[1][1]["address"]
        )
    )
    expected_lines = sorted(expected.splitlines())
    wait_for(
        lambda: (
            server.hosts_file.exists()
            and sorted(server.hosts_file.read_text().splitlines()) == expected_lines
        ),
        10,
        "the hosts file to list the three names",
    )
    assert server.hosts_file.stat().st_mode & 0o777 == 0o644
    # A ping without a name keeps the name.
    status, answer = ping(members[1][0], fleet, settings)
    assert (status, answer["hostname"]) == (200, "excavator2")

    # Outside the tunnel: from the client's LAN address, and from loopback with a
    # forged X-Forwarded-For naming a registered client.
    status, answer = members[0][0].namespace.http(
        "POST", f"http://198.18.0.1:{HTTP_PORT}/fleet/{fleet}/ping", {}
    )
    assert status == 403, answer
    status, answer = lab.server.http(
        "POST",
        f"http://[::1]:{HTTP_PORT}/fleet/{fleet}/ping",
        {"hostname": "hijack"},
        headers={"X-Forwarded-For": members[0][1]["address"]},
    )
    assert status == 403, answer
    assert "hijack" not in server.hosts_file.read_text()


def test_restart_keeps_tunnels_and_repairs_the_interface_from_the_database(lab: Lab) -> None:
    server, fleet, settings = start(lab)
    (first, first_body), (second, _) = (
        join(lab, fleet, settings),
        join(lab, fleet, settings),
    )
    expected_peers = server.peers(fleet)
    assert len(expected_peers) == 2

    assert server.stop(signal.SIGTERM) == 0
    assert first.can_ping(settings["ip6"], timeout=10)  # the tunnel outlives the service

    interface = f"wg_{fleet}"
    lab.server.run("wg", "set", interface, "peer", first_body["public_key"], "remove")
    stray_key = lab.server.run("wg", "pubkey", stdin=lab.server.run("wg", "genkey")).strip()
    stray_ip = f"{settings['ip6'][:-1]}99/128"
    lab.server.run("wg", "set", interface, "peer", stray_key, "allowed-ips", stray_ip)
    assert first_body["public_key"] not in server.peers(fleet)

    server.start()
    assert server.peers(fleet) == expected_peers
    # The client whose peer was deleted re-handshakes within ~15 s of its first
    # unanswered packet.
    assert first.can_ping(settings["ip6"], timeout=30)
    assert second.can_ping(settings["ip6"], timeout=10)
    assert f"{interface} lacked 1 peer(s) of the database; added them back" in server.output()
    assert f"{interface} held 1 peer(s) the database does not know; removed them" in (
        server.output()
    )


def test_interface_taken_down_by_hand_comes_back_with_its_peers(lab: Lab) -> None:
    server, fleet, settings = start(lab, prune_interval="1s")
    client, _ = join(lab, fleet, settings)
    expected_peers = server.peers(fleet)
    lab.server.run("ip", "link", "del", f"wg_{fleet}")

    wait_for(
        lambda: (
            lab.server.ok("wg", "show", f"wg_{fleet}") and server.peers(fleet) == expected_peers
        ),
        15,
        "the pruning pass to restore the interface and its peers",
    )
    assert client.can_ping(settings["ip6"], timeout=30)


def test_silent_clients_are_pruned_while_pinging_clients_stay(lab: Lab) -> None:
    server, fleet, settings = start(lab, prune_timeout="4s", prune_interval="1s")
    (alive, alive_body), (silent, silent_body) = (
        join(lab, fleet, settings),
        join(lab, fleet, settings),
    )
    for client, name in ((alive, "keeper"), (silent, "quitter")):
        status, answer = ping(client, fleet, settings, {"hostname": name})
        assert (status, answer["hostname"]) == (200, name)
    wait_for(lambda: "quitter" in server.hosts_file.read_text(), 10, "quitter in the hosts file")
    silent.down()

    def silent_pruned() -> bool:
        status, _ = ping(alive, fleet, settings)
        assert status == 200  # the pinging client is never pruned
        return silent_body["public_key"] not in server.peers(fleet)

    wait_for(silent_pruned, 30, "the silent client to be pruned", interval=0.5)
    assert server.peers(fleet) == {alive_body["public_key"]: f"{alive_body['address']}/128"}
    assert stored_addresses(server, fleet) == {alive_body["address"]}
    wait_for(
        lambda: (
            server.hosts_file.read_text() == f"{alive_body['address']} keeper.{fleet}.fleet.test\n"
        ),
        10,
        "the hosts file to drop the pruned client",
    )
    status, page = server.api("GET", f"/fleet/{fleet}")
    assert status == 200
    clients = page.split('id="events"')[0]  # the latest events still tell of the pruned
    assert alive_body["address"] in clients
    assert silent_body["address"] not in clients  # gone from the dashboard too
    assert alive.can_ping(settings["ip6"], timeout=10)

"""Two wg-fleet nodes, each running its own fleet, sharing one PostgreSQL database."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import HTTP_PORT, Lab, Server, fleet_config, unique, wait_for
from tests.e2e.test_lifecycle import join, ping
from tests.postgres import PostgresServer


@pytest.fixture
def shared_database(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


def hosts_lines(server: Server) -> set[str]:
    return set(server.hosts_file.read_text().splitlines()) if server.hosts_file.exists() else set()


def test_two_nodes_share_one_view_and_a_fleet_moves_without_losing_clients(
    lab: Lab, shared_database: str
) -> None:
    west_namespace, west_number = lab.host("s")
    west_ip = f"198.18.0.{west_number}"
    east_fleet, west_fleet = unique("f"), unique("f")
    east_settings = fleet_config(east_fleet, 6, node="east")
    west_settings = fleet_config(west_fleet, 7, node="west", external_ip=west_ip)
    common: dict[str, Any] = {
        "domain": "fleet.test",
        "prune_timeout": "30m",
        "prune_interval": "1s",
        "database": shared_database,
        "fleets": {east_fleet: east_settings, west_fleet: west_settings},
    }
    east = Server(lab, {**common, "node": "east"})
    west = Server(lab, {**common, "node": "west"}, namespace=west_namespace)
    east.start()
    west.start()
    # Each node brought up only its own fleet's interface.
    assert not lab.server.ok("ip", "link", "show", f"wg_{west_fleet}")
    assert not west_namespace.ok("ip", "link", "show", f"wg_{east_fleet}")

    first, first_body = join(lab, east_fleet, east_settings)
    assert ping(first, east_fleet, east_settings, {"hostname": "one"})[0] == 200
    second = lab.client()
    status, second_body = second.namespace.http(
        "POST", f"http://{west_ip}:{HTTP_PORT}/fleet/{west_fleet}/register"
    )
    assert status == 200, second_body
    second.up(second_body["config"])
    assert second.can_ping(west_settings["ip6"])
    assert ping(second, west_fleet, west_settings, {"hostname": "two"})[0] == 200

    expected = {
        f"{first_body['address']} one.{east_fleet}.fleet.test",
        f"{second_body['address']} two.{west_fleet}.fleet.test",
    }
    for server in (east, west):
        wait_for(lambda s=server: hosts_lines(s) == expected, 15, "both names in both hosts files")

    status, body = east.api("GET", "/api/fleets")
    assert status == 200
    assert {(f["name"], f["node"], f["clients"]) for f in body["fleets"]} == {
        (east_fleet, "east", 1),
        (west_fleet, "west", 1),
    }
    status, body = east.api("POST", f"/fleet/{west_fleet}/register")
    assert status == 421
    assert body == {
        "detail": f"Fleet {west_fleet} is run by the wg-fleet node 'west'; ask that node."
    }
    status, metrics = east.api("GET", "/metrics")
    assert f'wg_fleet_clients{{fleet="{west_fleet}",node="west"}} 1.0' in metrics

    # One node stopping leaves the other fully working.
    assert west.stop(signal.SIGTERM) == 0
    third, _ = join(lab, east_fleet, east_settings)
    assert ping(third, east_fleet, east_settings, {"hostname": "three"})[0] == 200
    assert first.can_ping(east_settings["ip6"], timeout=10)

    # Move the west fleet to the east node: the old machine's interface is gone, its
    # key file is carried over, and every client row is kept and restored as a peer.
    west_namespace.run("ip", "link", "del", f"wg_{west_fleet}")
    east.wireguard_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy2(west.wireguard_dir / f"wg_{west_fleet}.conf", east.wireguard_dir)
    assert east.stop(signal.SIGTERM) == 0
    moved = {**west_settings, "node": "east", "external_ip": "198.18.0.1"}
    east.config["fleets"] = {east_fleet: east_settings, west_fleet: moved}
    east.start()
    assert east.peers(west_fleet) == {second_body["public_key"]: f"{second_body['address']}/128"}
    status, body = east.api("GET", f"/api/fleets/{west_fleet}/clients")
    assert [c["address"] for c in body["clients"]] == [second_body["address"]]
    assert body["clients"][0]["hostname"] == "two"

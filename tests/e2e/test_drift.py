"""Drift repair on a real interface: each way an operator (or a reboot of the link) can
make `wg_<fleet>` differ from its config and database, done by hand with `ip` and `wg`
while clients are connected, must be repaired within two passes, counted, logged, and
the clients' tunnels must work again.

The interface is judged here with `ip` and `wg` directly, not with wg-fleet's parsers.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Client, Lab, Server, fleet_config, unique, wait_for

PASS_COUNT = re.compile(r"^wg_fleet_prune_duration_seconds_count (\S+)$", re.MULTILINE)


def start(lab: Lab, **overrides: Any) -> tuple[Server, str, dict[str, Any]]:
    fleet = unique("d")
    settings = fleet_config(fleet, 5)
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


def metrics(server: Server) -> str:
    status, text = server.api("GET", "/metrics")
    assert status == 200
    return str(text)


def passes(server: Server) -> int:
    match = PASS_COUNT.search(metrics(server))
    assert match, "no pass count in /metrics"
    return int(float(match.group(1)))


def repairs(server: Server, fleet: str, what: str) -> float:
    """wg_fleet_repairs_total of the fleet for `what` (labels in any order)."""
    for line in metrics(server).splitlines():
        name, _, rest = line.partition("{")
        labels = rest.partition("}")[0].split(",")
        if name == "wg_fleet_repairs_total" and {f'fleet="{fleet}"', f'what="{what}"'} <= set(
            labels
        ):
            return float(rest.rpartition(" ")[2])
    return 0.0


def interface_matches(lab: Lab, server: Server, fleet: str, settings: dict[str, Any]) -> bool:
    """Up, with its address, port, key and exactly the database's peers — read with
    `ip` and `wg` themselves."""
    interface = f"wg_{fleet}"
    shown = lab.server.run("ip", "-j", "addr", "show", "dev", interface, check=False)
    if not shown:
        return False
    link = json.loads(shown)[0]
    addresses = {
        f"{info['local']}/{info['prefixlen']}"
        for info in link.get("addr_info", [])
        if info.get("family") == "inet6"
    }
    if "UP" not in link["flags"] or f"{settings['ip6']}/64" not in addresses:
        return False
    port = lab.server.run("wg", "show", interface, "listen-port").strip()
    public = lab.server.run("wg", "show", interface, "public-key").strip()
    config = (server.wireguard_dir / f"{interface}.conf").read_text()
    private = re.search(r"^PrivateKey = (\S+)$", config, re.MULTILINE)
    assert private is not None
    expected_public = lab.server.run("wg", "pubkey", stdin=private.group(1) + "\n").strip()
    return port == str(settings["port"]) and public == expected_public


def other_key(tmp_path: Path, lab: Lab) -> Path:
    path = tmp_path / "other.key"
    path.touch(mode=0o600)
    path.write_text(lab.server.run("wg", "genkey"))
    return path


Fault = Callable[[Lab, Path, str, dict[str, Any], dict[str, Any]], None]

FAULTS: dict[str, tuple[Fault, list[str]]] = {
    "interface deleted": (
        lambda lab, tmp, interface, settings, body: lab.server.run("ip", "link", "del", interface),
        ["interface"],
    ),
    "link set down": (
        lambda lab, tmp, interface, settings, body: lab.server.run(
            "ip", "link", "set", interface, "down"
        ),
        # Linux drops the link's IPv6 address with it: both are repaired.
        ["link", "address"],
    ),
    "address removed": (
        lambda lab, tmp, interface, settings, body: lab.server.run(
            "ip", "addr", "del", f"{settings['ip6']}/64", "dev", interface
        ),
        ["address"],
    ),
    "port changed": (
        lambda lab, tmp, interface, settings, body: lab.server.run(
            "wg", "set", interface, "listen-port", str(settings["port"] + 1000)
        ),
        ["port"],
    ),
    "key replaced": (
        lambda lab, tmp, interface, settings, body: lab.server.run(
            "wg", "set", interface, "private-key", str(other_key(tmp, lab))
        ),
        ["key"],
    ),
    "allowed IPs changed": (
        lambda lab, tmp, interface, settings, body: lab.server.run(
            "wg",
            "set",
            interface,
            "peer",
            body["public_key"],
            "allowed-ips",
            f"{settings['ip6'][:-1]}dead/128",
        ),
        ["allowed-ips"],
    ),
}


@pytest.mark.parametrize("fault", FAULTS.keys())
def test_a_hand_made_difference_is_repaired_within_two_passes(
    lab: Lab, tmp_path: Path, fault: str
) -> None:
    server, fleet, settings = start(lab, prune_interval="2s")
    interface = f"wg_{fleet}"
    first, first_body = join(lab, fleet, settings)
    second, _ = join(lab, fleet, settings)
    expected_peers = server.peers(fleet)
    wait_for(lambda: interface_matches(lab, server, fleet, settings), 10, "a matching interface")
    break_it, whats = FAULTS[fault]

    break_it(lab, tmp_path, interface, settings, first_body)
    before = passes(server)
    wait_for(
        lambda: (
            interface_matches(lab, server, fleet, settings)
            and server.peers(fleet) == expected_peers
        ),
        30,
        f"the {fault} to be repaired",
        interval=0.1,
    )
    assert passes(server) - before <= 2
    for what in whats:
        assert repairs(server, fleet, what) >= 1, what
    # Both clients' tunnels work again (a client whose session the server lost
    # re-handshakes within ~15 s of its first unanswered packet).
    assert first.can_ping(settings["ip6"], timeout=30)
    assert second.can_ping(settings["ip6"], timeout=30)
    wait_for(lambda: server.api("GET", "/health")[0] == 200, 10, "/health to pass")
    assert "Traceback" not in server.output()


def test_health_names_what_differs_until_the_next_pass_repairs_it(lab: Lab) -> None:
    """With passes an hour apart, /health reports the differences itself; SIGHUP runs the
    pass that repairs them."""
    server, fleet, settings = start(lab, prune_interval="1h")
    interface = f"wg_{fleet}"
    client, _ = join(lab, fleet, settings)
    lab.server.run("wg", "set", interface, "listen-port", str(settings["port"] + 1000))
    lab.server.run("ip", "addr", "del", f"{settings['ip6']}/64", "dev", interface)

    expected = [
        f"fleet {fleet}: interface {interface} lacks its address {settings['ip6']}/64",
        f"fleet {fleet}: interface {interface} listens on port {settings['port'] + 1000}, "
        f"not {settings['port']}",
    ]

    def reported() -> bool:
        status, body = server.api("GET", "/health")
        return status == 503 and body == {"status": "fail", "problems": expected}

    # The port is read from a cached dump, refreshed in the background within seconds.
    wait_for(reported, 20, "/health to name the address and the port")
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGHUP)
    wait_for(lambda: server.api("GET", "/health")[0] == 200, 20, "/health to pass again")
    assert interface_matches(lab, server, fleet, settings)
    assert client.can_ping(settings["ip6"], timeout=30)

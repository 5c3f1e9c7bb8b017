"""Names reach DNS: a real dnsmasq reading wg-fleet's hosts file through `hostsdir`."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Lab, Namespace, Server, fleet_config, unique, wait_for
from tests.e2e.test_lifecycle import join, ping

DNS_PORT = 5353


@pytest.fixture
def dnsmasq_binary() -> str:
    binary = shutil.which("dnsmasq")
    if binary is None:
        pytest.fail("dnsmasq is not installed (scripts/setup --dev installs dnsmasq-base)")
    return binary


@pytest.fixture
def dns(lab: Lab, dnsmasq_binary: str, tmp_path: Path) -> Iterator[Path]:
    """dnsmasq in the server namespace on [::1]:5353, serving only the hosts directory."""
    directory = tmp_path / "hosts.d"
    directory.mkdir()
    process = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.server.name,
            dnsmasq_binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            f"--hostsdir={directory}",
            "--listen-address=::1",
            "--bind-interfaces",
            f"--port={DNS_PORT}",
            "--user=root",
            "--pid-file=",
            "--log-facility=-",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: query(lab.server, "probe.invalid") is not None, 10, "dnsmasq to answer")
        yield directory
    finally:
        process.kill()
        process.wait(timeout=10)


def query(namespace: Namespace, name: str) -> str | None:
    """The AAAA answer for `name` ("" when there is none), or None when DNS is silent."""
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            namespace.name,
            "dig",
            "+short",
            "+time=1",
            "+tries=1",
            "-p",
            str(DNS_PORT),
            "@::1",
            "AAAA",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def targets(path: Path) -> list[tuple[str, dict[str, str]]]:
    if not path.exists():
        return []
    return [(group["targets"][0], group["labels"]) for group in json.loads(path.read_text())]


def test_a_name_resolves_after_its_ping_follows_a_rename_and_goes_with_the_prune(
    lab: Lab, dns: Path, tmp_path: Path
) -> None:
    """DNS and the Prometheus targets file both follow registration, renames and pruning."""
    fleet = unique("f")
    settings = fleet_config(fleet, 5)
    server = Server(
        lab,
        {
            "domain": "fleet.test",
            "prune_timeout": "4s",
            "prune_interval": "1s",
            "hosts_file": str(dns / "hosts"),
            "prometheus_targets_file": str(tmp_path / "targets.json"),
            "node": "lab",
            "fleets": {fleet: settings},
        },
    )
    server.start()
    client, body = join(lab, fleet, settings)
    name = f"digger.{fleet}.fleet.test"

    target = f"[{body['address']}]:9100"
    wait_for(
        lambda: targets(tmp_path / "targets.json") == [(target, {"fleet": fleet, "node": "lab"})],
        10,
        "the new client in the targets file",
    )
    assert ping(client, fleet, settings, {"hostname": "digger"})[1]["fqdn"] == name
    wait_for(lambda: query(lab.server, name) == body["address"], 10, f"{name} to resolve")
    labelled = (target, {"fleet": fleet, "hostname": "digger", "node": "lab"})
    assert targets(tmp_path / "targets.json") == [labelled]

    assert ping(client, fleet, settings, {"hostname": "shovel"})[0] == 200
    renamed = f"shovel.{fleet}.fleet.test"
    wait_for(lambda: query(lab.server, renamed) == body["address"], 10, f"{renamed} to resolve")
    assert query(lab.server, name) == ""

    client.down()  # silent from now on: no pings, no handshakes
    wait_for(lambda: query(lab.server, renamed) == "", 30, f"{renamed} to vanish after pruning")
    assert targets(tmp_path / "targets.json") == []
    assert server.api("GET", f"/api/fleets/{fleet}/clients")[1]["clients"] == []

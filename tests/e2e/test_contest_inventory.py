"""The contest's inventory end to end: labels set by the real agent through real tunnels
reach the API, the hosts file (through `{label.site}`), the Prometheus targets file, the
label groups and `ansible-inventory`; `down --leave` removes everything at once and the
next machine gets the clean name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.harness import REPO, Client, Lab, Server, fleet_config, unique, wait_for
from tests.e2e.test_client_agent import SERVER_URL, agent, files, setting, succeeded

INVENTORY_SCRIPT = REPO / "contrib" / "ansible" / "wg_fleet_inventory"
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
NAMES = ["{hostname}.{label.site}.{domain}", "{hostname}.{domain}", "{hostname}"]


def address_of(client: Client) -> str:
    conf, _ = files(client)
    return setting(conf, "Address").removesuffix("/128")


def ansible_inventory(lab: Lab, tmp_path: Path) -> Any:
    """`ansible-inventory --list -i wg_fleet_inventory`, run where the server listens."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "WG_FLEET_URL": "http://[::1]:8000",
    }
    result = subprocess.run(
        ["ip", "netns", "exec", lab.server.name, str(ANSIBLE_INVENTORY), "--list", "-i",
         str(INVENTORY_SCRIPT)],
        capture_output=True, text=True, env=environment, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_labels_reach_every_output_and_a_leave_removes_them_at_once(
    lab: Lab, tmp_path: Path
) -> None:
    fleet = unique("f")
    targets = tmp_path / "targets.json"
    server = Server(
        lab,
        {
            "domain": "icpcnet.internal",
            "prune_timeout": "30m",
            "names": NAMES,
            "prometheus_targets_file": str(targets),
            "node": "lab",
            "fleets": {fleet: fleet_config(fleet, 6)},
        },
    )
    server.start()

    first = lab.client()
    labels_file = tmp_path / "labels"
    labels_file.write_text("site = UCF\nteam=0\n")
    up = ("up", "--server", SERVER_URL, "--fleet", fleet, "--hostname", "t42")
    out = succeeded(agent(first, *up, "--label", "team=42", "--labels-file", str(labels_file)))
    assert f"as t42.{fleet}.icpcnet.internal" in out  # the ping answer's fqdn is unchanged
    address = address_of(first)
    names = "t42.ucf.icpcnet.internal t42.icpcnet.internal t42"

    # The API, at once (the ping that set the labels was committed before its answer).
    status, body = server.api("GET", f"/api/fleets/{fleet}/clients?label=site:UCF")
    assert status == 200
    assert [(c["hostname"], c["labels"]) for c in body["clients"]] == [
        ("t42", {"site": "UCF", "team": "42"})
    ]
    assert server.hosts_file.read_text() == f"{address} {names}\n"
    group = json.loads(targets.read_text())
    assert group == [
        {
            "targets": [f"[{address}]:9100"],
            "labels": {
                "fleet": fleet,
                "hostname": "t42",
                "node": "lab",
                "site": "UCF",
                "team": "42",
            },
        }
    ]
    # A plain ping (as the timer runs it) keeps the remembered labels.
    succeeded(agent(first, "ping"))
    # Online once the handshake shows in a fresh `wg show` (the status cache is 5 s old).
    online = {"label": "site", "groups": [{"value": "UCF", "clients": 1, "online": 1}]}
    wait_for(
        lambda: server.api("GET", f"/api/fleets/{fleet}/groups?label=site")[1] == online,
        20,
        "the site group to count the client online",
    )

    inventory = ansible_inventory(lab, tmp_path)
    assert inventory["_meta"]["hostvars"]["t42.ucf.icpcnet.internal"] == {
        "ansible_host": address,
        "wg_fleet": fleet,
        "wg_fleet_labels": {"site": "UCF", "team": "42"},
        "wg_fleet_online": True,
    }
    assert inventory["site_ucf"]["hosts"] == ["t42.ucf.icpcnet.internal"]
    assert inventory[f"fleet_{fleet}"]["hosts"] == ["t42.ucf.icpcnet.internal"]
    assert inventory["online"]["hosts"] == ["t42.ucf.icpcnet.internal"]

    # A clean shutdown: the service's ExecStop runs `down --leave`.
    assert "left fleet" in succeeded(agent(first, "down", "--leave"))
    # Everything but the peer is gone before the agent hears the answer ...
    assert server.api("GET", f"/api/fleets/{fleet}/clients")[1]["clients"] == []
    assert server.hosts_file.read_text() == ""
    assert json.loads(targets.read_text()) == []
    # ... and the peer a moment after the answer has left through the tunnel.
    wait_for(lambda: server.peers(fleet) == {}, 10, "the peer to leave the interface")
    assert not first.namespace.ok("ip", "link", "show", "dev", first.interface)

    # The next machine asking for t42 gets it, not t422.
    second = lab.client()
    out = succeeded(agent(second, *up, "--label", "site=ucf", "--labels-file", "/nonexistent"))
    assert f"as t42.{fleet}.icpcnet.internal" in out
    assert server.hosts_file.read_text() == f"{address_of(second)} {names}\n"
    assert list(ansible_inventory(lab, tmp_path)["_meta"]["hostvars"]) == [
        "t42.ucf.icpcnet.internal"
    ]

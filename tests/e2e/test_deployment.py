"""wg-fleet deployed as the README's Deployment section says, under a real systemd.

A Debian bookworm machine boots with systemd as PID 1 (tests/e2e/machine.py) in the lab's
server namespace; a client namespace on the lab's bridge registers, and a second machine
acting as a client runs the client agent's service and timer. The steps run in order and
build on each other: install, serve, restart, reload, reboot, upgrade, hardening, agent.

pip inside the machines reads a wheelhouse downloaded on the host (the machines have no
network but the lab's), exactly as an offline install would: install.sh is run with pip's
own PIP_NO_INDEX/PIP_FIND_LINKS.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import (
    HTTP_PORT,
    REPO,
    SERVER_V4,
    Client,
    Lab,
    Namespace,
    fleet_config,
    prerequisites_missing,
    unique,
    wait_for,
)
from tests.e2e.machine import CACHE, Machine, missing_host_tools

REQUIRED = os.environ.get("WG_FLEET_REQUIRE_E2E") == "1"
# Numbers 3 and 4: ports 51823-51824, clear of the example config's 51820-51821, whose
# interfaces stay up after the config is replaced (nothing is deleted by a config edit).
FLEETS = {"east": 3, "west": 4}
DOMAIN = "e2e.internal"
CHECKOUT = "/root/wg-fleet"
WHEELS = "/root/wheels"
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS}
EAST_ADDRESS = fleet_config("east", FLEETS["east"])["ip6"]
NET_ADMIN_ONLY = f"{1 << 12:016x}"


@dataclass
class Deployment:
    lab: Lab
    server: Machine
    client: Client
    workdir: Path
    machines: list[Machine]
    address: str = ""  # the client's fleet address, once registered

    def api(self, path: str) -> tuple[int, object]:
        return self.lab.server.http("GET", f"http://[::1]:{HTTP_PORT}{path}")

    def healthy(self) -> bool:
        return self.api("/health")[0] == 200

    def wait_healthy(self, what: str, timeout: float = 30) -> None:
        """Wait for /health to pass; on failure, say why with the service's journal."""
        try:
            wait_for(self.healthy, timeout, what)
        except AssertionError as error:
            status = self.server.run("systemctl", "status", "--no-pager", "wg-fleet", check=False)
            raise AssertionError(f"{error}\n{self.api('/health')}\n{status}") from None

    def peers(self, fleet: str) -> set[str]:
        out = self.server.run("wg", "show", f"wg_{fleet}", "peers", check=False)
        return set(out.split())

    def journal(self) -> str:
        return self.server.run("journalctl", "-b", "-u", "wg-fleet", "-o", "cat", "--no-pager")

    def hosts_file(self) -> str:
        return self.server.run("cat", "/run/wg-fleet/hosts")

    def main_pid(self) -> str:
        return self.server.run("systemctl", "show", "-p", "MainPID", "--value", "wg-fleet").strip()


def wheelhouse() -> Path:
    """The runtime requirements and the build backend as wheels, downloaded on the host
    once per requirements file (pip, with the host's index and CA settings)."""
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    requirements = (REPO / "requirements.txt").read_text()
    key = hashlib.sha256((requirements + "\n".join(requires)).encode()).hexdigest()[:12]
    wheels = CACHE / f"wheels-{key}"
    if not (wheels / ".complete").exists():
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"),
                *("-d", str(wheels), "-r", str(REPO / "requirements.txt"), *requires),
            ],
            check=True,
            timeout=600,
        )
        (wheels / ".complete").touch()
    return wheels


def install(server: Machine, checkout: str) -> str:
    """contrib/install.sh run inside the machine, from `checkout`, as the README says."""
    return server.run("sh", "-c", f"cd {checkout} && contrib/install.sh", env=OFFLINE, timeout=600)


def continuous_ping(namespace: Namespace, address: str, seconds: float) -> subprocess.Popen[str]:
    count = int(seconds / 0.1)
    return subprocess.Popen(
        [
            *("ip", "netns", "exec", namespace.name),
            *("ping", "-6", "-n", "-i", "0.1", "-W", "1", "-c", str(count), address),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def ping_result(process: subprocess.Popen[str]) -> tuple[int, int]:
    """(transmitted, received) of a finished continuous_ping."""
    output, _ = process.communicate(timeout=120)
    counts = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert counts is not None, output
    return int(counts.group(1)), int(counts.group(2))


def server_config() -> str:
    fleets = {name: fleet_config(name, number) for name, number in FLEETS.items()}
    return yaml.safe_dump({"domain": DOMAIN, "prune_timeout": "30m", "fleets": fleets})


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    missing = prerequisites_missing() or missing_host_tools()
    if missing:
        if REQUIRED:
            pytest.fail(f"WG_FLEET_REQUIRE_E2E=1 but {missing}")
        pytest.skip(missing)
    workdir = tmp_path_factory.mktemp("deployment")
    workdir.chmod(0o755)
    lab = Lab(workdir)
    machines: list[Machine] = []
    try:
        server = Machine(workdir, unique("wgfsrv"), lab.server.name)
        machines.append(server)
        server.boot()
        server.copy_checkout(CHECKOUT)
        wheels = server.path(WHEELS)
        wheels.mkdir()
        for wheel in wheelhouse().glob("*.whl"):
            (wheels / wheel.name).write_bytes(wheel.read_bytes())
        yield Deployment(lab, server, lab.client(), workdir, machines)
    finally:
        for machine in reversed(machines):
            machine.close()
        lab.close()


def test_install_sh_installs_enables_and_starts_the_service(deployment: Deployment) -> None:
    server = deployment.server
    output = install(server, CHECKOUT)
    assert "wg-fleet is running" in output
    assert server.run("systemctl", "is-enabled", "wg-fleet").strip() == "enabled"
    deployment.wait_healthy("the example config's fleets to be healthy", 30)
    # The example config, written because none existed: its two fleets are up.
    assert server.run("stat", "-c", "%a", "/etc/wg-fleet.yaml").strip() == "600"
    links = server.run("ip", "-br", "link")
    assert "wg_southeast" in links
    assert "wg_northwest" in links
    # Installed from pyproject.toml's declaration, owned by root, writable by root only.
    found = server.run(
        "find", "/opt/wg-fleet", "!", "-type", "l", "(", "!", "-user", "root", "-o", "!",
        "-group", "root", "-o", "-perm", "/022", ")",
    )  # fmt: skip
    assert found == ""
    # pip built from a copy: the operator's checkout is left as it was.
    leftovers = f"ls -d {CHECKOUT}/build {CHECKOUT}/*.egg-info"
    assert server.run("sh", "-c", leftovers, check=False) == ""


def test_the_configured_fleet_registers_a_client_that_pings_through(
    deployment: Deployment,
) -> None:
    server = deployment.server
    server.path("/etc/wg-fleet.yaml").write_text(server_config())
    server.run("systemctl", "restart", "wg-fleet")
    deployment.wait_healthy("wg-fleet to answer with the new config", 30)
    assert server.run("systemctl", "is-active", "wg-fleet").strip() == "active"
    status, body = deployment.client.register("east")
    assert status == 200, body
    assert isinstance(body, dict)
    deployment.address = body["address"]
    deployment.client.up(body["config"])
    assert deployment.client.can_ping(EAST_ADDRESS)


def test_restart_keeps_every_tunnel_passing_traffic(deployment: Deployment) -> None:
    server, client = deployment.server, deployment.client
    fleet_address = EAST_ADDRESS
    daemons = server.run("pidof", "wireguard-go").split()
    scopes = server.run("systemctl", "list-units", "--plain", "--no-legend", "wg-fleet-wg_*.scope")
    assert len(scopes.splitlines()) >= len(FLEETS), scopes
    before = deployment.main_pid()
    pinging = continuous_ping(client.namespace, fleet_address, seconds=10)
    time.sleep(2)  # the restart falls inside the ping
    server.run("systemctl", "restart", "wg-fleet")
    deployment.wait_healthy("wg-fleet to answer after the restart", 30)
    transmitted, received = ping_result(pinging)
    assert deployment.main_pid() != before
    assert (transmitted, received) == (100, 100)
    assert server.run("pidof", "wireguard-go").split() == daemons
    status, body = deployment.api("/api/fleets/east/clients")
    assert status == 200
    assert isinstance(body, dict)
    assert [c["address"] for c in body["clients"]] == [deployment.address]


def test_reload_runs_a_reconcile_pass(deployment: Deployment) -> None:
    server = deployment.server
    (key,) = deployment.peers("east")
    server.run("wg", "set", "wg_east", "peer", key, "remove")
    assert deployment.peers("east") == set()
    pid = deployment.main_pid()
    server.run("systemctl", "reload", "wg-fleet")
    wait_for(lambda: deployment.peers("east") == {key}, 15, "the reload to restore the peer")
    assert deployment.main_pid() == pid  # reloaded, not restarted
    assert "SIGHUP: reconciling every fleet now" in deployment.journal()


def test_after_a_reboot_the_service_starts_and_every_tunnel_works(
    deployment: Deployment,
) -> None:
    server, client = deployment.server, deployment.client
    (key,) = deployment.peers("east")
    server.poweroff()
    server.boot()  # the same tree, with a fresh /run
    assert server.run("systemctl", "is-enabled", "wg-fleet").strip() == "enabled"
    deployment.wait_healthy("wg-fleet to start by itself after the reboot", 60)
    assert server.run("systemctl", "is-active", "wg-fleet").strip() == "active"
    assert deployment.peers("east") == {key}
    assert client.can_ping(EAST_ADDRESS, timeout=60)
    journal = deployment.journal()
    assert "wg_east: up; 1 peer(s) restored, 0 unknown removed, 0 pruned" in journal
    assert "wg_west: up; 0 peer(s) restored, 0 unknown removed, 0 pruned" in journal


def newer_checkout(server: Machine) -> str:
    """This checkout, as a next release: a higher version and one more migration."""
    path = "/root/wg-fleet-next"
    checkout = server.copy_checkout(path)
    pyproject = checkout / "pyproject.toml"
    text = pyproject.read_text()
    newer = re.sub(r'^version = "([^"]+)"', r'version = "\1.post1"', text, count=1, flags=re.M)
    assert newer != text
    pyproject.write_text(newer)
    versions = checkout / "migrations" / "versions"
    revisions, parents = set(), set()
    for script in versions.glob("*.py"):
        source = script.read_text()
        revisions |= set(re.findall(r'^revision = "([^"]+)"', source, re.M))
        parents |= set(re.findall(r'^down_revision = "([^"]+)"', source, re.M))
    (head,) = revisions - parents
    (versions / "9999_e2e_upgrade.py").write_text(
        '"""A migration that only the upgrade test\'s newer checkout has."""\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "e2e_upgrade"\ndown_revision = "{head}"\n\n\n'
        "def upgrade() -> None:\n"
        '    op.create_table("e2e_upgrade", sa.Column("id", sa.Integer, primary_key=True))\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_table("e2e_upgrade")\n'
    )
    return path


def test_install_sh_from_a_newer_checkout_upgrades_in_place(deployment: Deployment) -> None:
    server, client = deployment.server, deployment.client
    config = server.path("/etc/wg-fleet.yaml").read_bytes()
    server_key = server.run("wg", "show", "wg_east", "public-key")
    peers = deployment.peers("east")
    checkout = newer_checkout(server)
    pinging = continuous_ping(client.namespace, EAST_ADDRESS, seconds=10)
    install(server, checkout)
    deployment.wait_healthy("wg-fleet to answer after the upgrade", 30)
    transmitted, received = ping_result(pinging)
    assert (transmitted, received) == (100, 100)
    version = server.run(
        "/opt/wg-fleet/.venv/bin/python", "-c",
        "import importlib.metadata as m; print(m.version('wg-fleet'))",
    )  # fmt: skip
    assert version.strip().endswith(".post1")
    assert server.path("/etc/wg-fleet.yaml").read_bytes() == config
    assert server.run("wg", "show", "wg_east", "public-key") == server_key
    assert deployment.peers("east") == peers
    schema = server.run(
        "python3", "-c",
        "import sqlite3; db = sqlite3.connect('/var/lib/wg-fleet/clients.db');"
        "print(db.execute('select version_num from alembic_version').fetchone()[0]);"
        "print(db.execute('select count(*) from clients').fetchone()[0])",
    )  # fmt: skip
    assert schema.split() == ["e2e_upgrade", "1"]
    assert client.can_ping(EAST_ADDRESS)


def test_the_journal_has_one_start_up_line_per_fleet(deployment: Deployment) -> None:
    journal = deployment.journal()
    starts = [line for line in journal.splitlines() if re.search(r"wg_\w+: up; ", line)]
    fleets = [re.search(r"wg_(\w+): up; ", line).group(1) for line in starts]  # type: ignore[union-attr]
    # This boot started the service twice (at boot, by the upgrade): one line per fleet each.
    assert sorted(fleets) == sorted(list(FLEETS) * 2)


def test_systemd_rates_the_unit_and_enforces_its_hardening(deployment: Deployment) -> None:
    server = deployment.server
    report = server.run("systemd-analyze", "security", "--no-pager", "wg-fleet.service")
    score = re.search(r"Overall exposure level for wg-fleet.service: (\d+\.\d+)", report)
    assert score is not None, report
    print(f"systemd-analyze security (booted systemd): {score.group(1)}")  # noqa: T201
    assert float(score.group(1)) <= 3.0

    pid = deployment.main_pid()
    status = dict(
        line.partition(":")[::2] for line in server.run("cat", f"/proc/{pid}/status").splitlines()
    )
    for capabilities in ("CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[capabilities].strip() == NET_ADMIN_ONLY, capabilities
    assert (status["NoNewPrivs"].strip(), status["Seccomp"].strip()) == ("1", "2")
    limits = server.run("cat", f"/proc/{pid}/limits")
    assert re.search(r"^Max core file size\s+0\s+0\s", limits, re.M), limits

    def can_write(path: str) -> bool:
        probe = f"{path}/.wg-fleet-probe"
        return server.ok("nsenter", "-t", pid, "-m", "sh", "-c", f"touch {probe} && rm {probe}")

    writable = ["/etc/wireguard", "/var/lib/wg-fleet", "/run/wg-fleet", "/run/wireguard", "/tmp"]
    read_only = ["/etc", "/etc/systemd/system", "/opt/wg-fleet", "/usr", "/run", "/var/lib"]
    assert [path for path in writable if not can_write(path)] == []
    assert [path for path in read_only if can_write(path)] == []
    # Its /tmp is its own, and /root is hidden.
    server.run("nsenter", "-t", pid, "-m", "touch", "/tmp/.wg-fleet-private")
    assert ".wg-fleet-private" not in server.run("ls", "-A", "/tmp")
    assert server.run("nsenter", "-t", pid, "-m", "ls", "-A", "/root") == ""
    # The wireguard-go daemons live in scopes of their own, not in the service's cgroup.
    for daemon in server.run("pidof", "wireguard-go").split():
        cgroup = server.run("cat", f"/proc/{daemon}/cgroup")
        assert re.search(r"/wg-fleet-wg_\w+-\d+\.scope$", cgroup, re.M), cgroup


def test_the_client_agent_timer_enrolls_a_machine(deployment: Deployment) -> None:
    lab, server = deployment.lab, deployment.server
    namespace, _ = lab.host("a")
    agent = Machine(deployment.workdir, unique("wgfagt"), namespace.name)
    deployment.machines.append(agent)
    agent.path("/etc/hostname").write_text("e2e-agent\n")
    agent.boot()
    agent.copy_checkout(CHECKOUT)
    # The README's Client agent section, as root on the client.
    agent.run("install", "-m", "0755", f"{CHECKOUT}/client/wg-fleet-client", "/usr/local/bin/")
    units = [
        f"{CHECKOUT}/contrib/systemd/{unit}"
        for unit in (
            "wg-fleet-client.service",
            "wg-fleet-client-ping.service",
            "wg-fleet-client.timer",
        )
    ]
    agent.run("install", "-m", "0644", *units, "/etc/systemd/system/")
    agent.run(
        "wg-fleet-client", "up", "--server", f"http://{SERVER_V4}:{HTTP_PORT}", "--fleet", "east",
        timeout=120,
    )  # fmt: skip
    agent.run(
        "sh", "-c",
        "systemctl daemon-reload"
        " && systemctl enable --now wg-fleet-client.service wg-fleet-client.timer",
        timeout=240,
    )  # fmt: skip
    fqdn = f"e2e-agent.east.{DOMAIN}"
    wait_for(lambda: fqdn in deployment.hosts_file(), 15, f"{fqdn} in the hosts file")
    for unit in ("wg-fleet-client.service", "wg-fleet-client.timer"):
        assert agent.run("systemctl", "is-active", unit).strip() == "active", unit
    assert (
        agent.run("systemctl", "show", "-p", "Unit", "--value", "wg-fleet-client.timer").strip()
        == "wg-fleet-client-ping.service"
    )

    # The server forgets the machine (its row deleted while the service is stopped):
    # the next run of the timer's service registers it again and its name comes back.
    server.run("systemctl", "stop", "wg-fleet")
    server.run(
        "python3", "-c",
        "import sqlite3; db = sqlite3.connect('/var/lib/wg-fleet/clients.db');"
        "db.execute('delete from clients where hostname = ?', ('e2e-agent',)); db.commit()",
    )  # fmt: skip
    server.run("systemctl", "start", "wg-fleet")
    deployment.wait_healthy("wg-fleet to answer", 30)
    wait_for(lambda: fqdn not in deployment.hosts_file(), 15, f"{fqdn} to leave the hosts file")
    agent.run("systemctl", "start", "wg-fleet-client-ping.service", timeout=240)
    result = agent.run(
        "systemctl", "show", "-p", "Result", "--value", "wg-fleet-client-ping.service"
    )
    assert result.strip() == "success"
    wait_for(lambda: fqdn in deployment.hosts_file(), 15, f"{fqdn} back in the hosts file")
    agent_address = deployment.hosts_file().split(fqdn)[0].split()[-1]
    assert agent_address in json.dumps(deployment.api("/api/fleets/east/clients")[1])
    assert agent.ok("ping", "-6", "-c", "1", "-W", "5", EAST_ADDRESS)

    # A clean shutdown stops wg-fleet-client.service, whose ExecStop leaves the fleet: the
    # name is free at once, long before the server's prune_timeout would have freed it.
    agent.poweroff()
    assert fqdn not in deployment.hosts_file()
    clients = deployment.api("/api/fleets/east/clients")[1]
    assert agent_address not in json.dumps(clients)

"""Real WireGuard test hosts: network namespaces joined by a bridge, wireguard-go tunnels.

Topology of one test::

    [client ns c1] eth0 ──veth── ┐
    [client ns c2] eth0 ──veth── ┼─ br0 [server ns] 198.18.0.1 / fdfe::1  (wg-fleet runs here)
    ...                          ┘

Every name carries a per-run tag: wireguard-go's sockets in /var/run/wireguard are
shared by all namespaces, so interface names must not collide between runs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RUN_TAG = secrets.token_hex(2)
SERVER_V4 = "198.18.0.1"
SERVER_V6 = "fdfe::1"
HTTP_PORT = 8000
_counter = itertools.count(1)


def unique(prefix: str) -> str:
    """A short name unique to this run, e.g. for interfaces (at most 15 characters)."""
    return f"{prefix}{RUN_TAG}{next(_counter)}"


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def sh(*argv: str, check: bool = True, timeout: float = 30, stdin: str | None = None) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, input=stdin, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


@dataclass
class Namespace:
    name: str

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30, stdin: str | None = None
    ) -> str:
        return sh(
            "ip", "netns", "exec", self.name, *argv, check=check, timeout=timeout, stdin=stdin
        )

    def ok(self, *argv: str, timeout: float = 30) -> bool:
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, timeout=timeout
        )
        return result.returncode == 0

    def http(
        self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """An HTTP request made with curl from inside this namespace: (status, parsed body)."""
        argv = ["curl", "-sS", "-m", "20", "-X", method, "-w", "\n%{http_code}", url]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=30,
            input=None if body is None else json.dumps(body),
            check=False,
        )
        if result.returncode != 0:
            return 0, result.stderr  # no HTTP answer at all (e.g. connection refused)
        text, _, status = result.stdout.rpartition("\n")
        try:
            return int(status), json.loads(text)
        except json.JSONDecodeError:
            return int(status), text

    def pids(self) -> list[int]:
        return [int(p) for p in sh("ip", "netns", "pids", self.name, check=False).split()]


@dataclass
class Client:
    namespace: Namespace
    ip4: str
    interface: str = field(default_factory=lambda: unique("wc"))
    config_dir: Path | None = None

    def register(self, fleet: str, body: Any = None) -> tuple[int, Any]:
        return self.namespace.http(
            "POST", f"http://{SERVER_V4}:{HTTP_PORT}/fleet/{fleet}/register", body
        )

    def up(self, config: str) -> Path:
        """Write `config` as this client's wg-quick file and bring the tunnel up."""
        assert self.config_dir is not None
        path = self.config_dir / f"{self.interface}.conf"
        path.write_text(config)
        path.chmod(0o600)
        self.namespace.run("wg-quick", "up", str(path), timeout=60)
        return path

    def down(self) -> None:
        assert self.config_dir is not None
        self.namespace.run("wg-quick", "down", str(self.config_dir / f"{self.interface}.conf"))

    def can_ping(self, address: str, timeout: float = 30) -> bool:
        wait_for(
            lambda: self.namespace.ok("ping", "-6", "-c", "1", "-W", "1", address),
            timeout,
            f"{self.namespace.name} to reach {address} through the tunnel",
            interval=0.1,
        )
        return True


class Lab:
    """The server namespace with its bridge, client namespaces, and their clean-up."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.namespaces: list[Namespace] = []
        self.interfaces: list[str] = []
        self.server = self._namespace("s")
        self.server.run("ip", "link", "add", "br0", "type", "bridge")
        # A fixed address: a bridge otherwise takes its lowest port's MAC, which changes
        # as hosts join, stalling tunnels that already carry traffic.
        self.server.run("ip", "link", "set", "br0", "address", "02:00:00:00:00:01")
        self.server.run("ip", "addr", "add", f"{SERVER_V4}/24", "dev", "br0")
        self.server.run("ip", "addr", "add", f"{SERVER_V6}/64", "dev", "br0", "nodad")
        self.server.run("ip", "link", "set", "br0", "up")
        self.clients: list[Client] = []
        self.servers: list[Server] = []
        self._hosts = 0

    def _namespace(self, role: str) -> Namespace:
        namespace = Namespace(unique(f"wgf-{role}"))
        sh("ip", "netns", "add", namespace.name)
        self.namespaces.append(namespace)
        namespace.run("ip", "link", "set", "lo", "up")
        return namespace

    def client(self) -> Client:
        namespace, number = self.host("c")
        config_dir = self.workdir / namespace.name
        config_dir.mkdir(mode=0o700)
        client = Client(namespace, f"198.18.0.{number}", config_dir=config_dir)
        self.interfaces.append(client.interface)
        self.clients.append(client)
        return client

    def host(self, role: str) -> tuple[Namespace, int]:
        """A namespace on the bridge at 198.18.0.<n> and fdfe::<n>; returns it and n."""
        self._hosts += 1
        number = self._hosts + 1
        namespace = self._namespace(role)
        port = f"vc{number}"
        self.server.run(
            "ip",
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            namespace.name,
        )
        self.server.run("ip", "link", "set", port, "master", "br0", "up")
        namespace.run("ip", "addr", "add", f"198.18.0.{number}/24", "dev", "eth0")
        namespace.run("ip", "addr", "add", f"fdfe::{number:x}/64", "dev", "eth0", "nodad")
        namespace.run("ip", "link", "set", "eth0", "up")
        return namespace, number

    def close(self) -> None:
        """End every process in our namespaces, then delete them and stray sockets."""
        for server in self.servers:
            if server.process is not None:
                server.process.kill()
                server.process.wait(timeout=10)
        for namespace in self.namespaces:
            for pid in namespace.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_for(lambda ns=namespace: not ns.pids(), 10, f"{namespace.name} to empty")
            sh("ip", "netns", "del", namespace.name, check=False)
        for interface in self.interfaces:
            Path(f"/var/run/wireguard/{interface}.sock").unlink(missing_ok=True)


def fleet_config(name: str, number: int, **extra: Any) -> dict[str, Any]:
    # Written as `ip` and `ipaddress` print it: a tag such as 0ff7 loses its leading zero.
    prefix = f"fd00:{int(RUN_TAG, 16):x}:{number:x}::"
    settings: dict[str, Any] = {
        "ip6": f"{prefix}1",
        "subnet": f"{prefix}/64",
        "external_ip": SERVER_V4,
        "port": 51820 + number,
    }
    settings.update(extra)
    return settings


class Server:
    """`python main.py` as a real process inside the server namespace."""

    def __init__(
        self, lab: Lab, config: dict[str, Any], namespace: Namespace | None = None
    ) -> None:
        """A server in `namespace` (default: the lab's server namespace)."""
        self.lab = lab
        self.namespace = namespace or lab.server
        self.state = lab.workdir / f"server-{self.namespace.name}"
        self.state.mkdir(exist_ok=True)
        self.config_path = self.state / "config.yaml"
        self.hosts_file = self.state / "hosts"
        self.database = self.state / "clients.db"
        self.wireguard_dir = self.state / "wireguard"
        self.config = {
            "database": str(self.database),
            "hosts_file": str(self.hosts_file),
            "wireguard_dir": str(self.wireguard_dir),
            **config,
        }
        for fleet in config["fleets"]:
            lab.interfaces.append(f"wg_{fleet}")
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.state / "server.log"
        lab.servers.append(self)

    def start(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.namespace.name,
                sys.executable,
                str(REPO / "main.py"),
                "--config",
                str(self.config_path),
                "--port",
                str(HTTP_PORT),
                "--log-level",
                "debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
        log.close()

        def answering() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"wg-fleet exited {self.process.returncode}:\n{self.output()}")
            status, _ = self.namespace.http("GET", f"http://[::1]:{HTTP_PORT}/health")
            return status == 200

        wait_for(answering, 30, "wg-fleet to answer")

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Signal the server's whole process group (as Ctrl-C does) and wait for it."""
        assert self.process is not None
        os.killpg(self.process.pid, sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.namespace.http(method, f"http://[::1]:{HTTP_PORT}{path}", body)

    def peers(self, fleet: str) -> dict[str, str]:
        """Public key → allowed IPs of the fleet's interface, read with `wg show`."""
        out = self.namespace.run("wg", "show", f"wg_{fleet}", "allowed-ips")
        return dict(line.split("\t", 1) for line in out.splitlines() if line)


def prerequisites_missing() -> str | None:
    if os.geteuid() != 0:
        return "end-to-end tests need root (network namespaces, WireGuard interfaces)"
    for binary in ("ip", "wg", "wg-quick", "wireguard-go", "curl", "ping"):
        if shutil.which(binary) is None:
            return f"end-to-end tests need `{binary}` (run scripts/setup --dev as root)"
    return None

"""Test doubles for unit tests: a clock, and a runner that emulates wg, wg-quick and ip.

The fake runner keeps interfaces in memory. It stands in for WireGuard only in unit
tests of routing and decision logic; the end-to-end tests under tests/e2e run the real one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from command import CommandFailed, CommandResult
from wireguard import public_key_of

SERVER_PRIVATE = "private-key-never-printed"


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 1, 1, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class FakeInterface:
    peers: dict[str, str] = field(default_factory=dict)  # public key -> allowed IPs
    handshakes: dict[str, int] = field(default_factory=dict)  # public key -> epoch
    up: bool = True
    private_key: str | None = None  # None: dump prints a public key matching no config
    listen_port: int = 51820
    addresses: set[str] = field(default_factory=set)  # "fd00:1::1/64"

    @classmethod
    def from_config(cls, path: Path) -> FakeInterface:
        """An interface as `wg-quick up` makes it from a server config."""
        interface = cls()
        if not path.exists():
            return interface
        for line in path.read_text().splitlines():
            name, _, value = (part.strip() for part in line.partition("="))
            if name == "PrivateKey":
                interface.private_key = value
            elif name == "ListenPort":
                interface.listen_port = int(value)
            elif name == "Address":
                interface.addresses.add(value)
        return interface


@dataclass
class FakeWireGuard:
    """Implements `command.Runner`. `fail` holds sub-commands (e.g. "addconf") to fail."""

    interfaces: dict[str, FakeInterface] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    stdins: list[str | None] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        timeout: float = 30,
        check: bool = True,
        new_session: bool = False,
    ) -> CommandResult:
        argv = tuple(argv)
        self.calls.append(argv)
        self.stdins.append(stdin)
        returncode, stdout, stderr = self._dispatch(argv, stdin)
        if check and returncode != 0:
            raise CommandFailed(argv, returncode, stderr)
        return CommandResult(argv, returncode, stdout, stderr)

    def count(self, *prefix: str) -> int:
        return sum(1 for call in self.calls if call[: len(prefix)] == prefix)

    def _dispatch(self, argv: tuple[str, ...], stdin: str | None) -> tuple[int, str, str]:
        verb = argv[1] if argv[0] == "wg" else argv[0]
        if verb in self.fail:
            return 1, "", f"fake failure of {verb}"
        match argv:
            case ("ip", "-o", "link", "show", "dev", name) | ("ip", "link", "show", "dev", name):
                if name not in self.interfaces:
                    return 1, "", f'Device "{name}" does not exist.'
                flags = "POINTOPOINT,NOARP,UP,LOWER_UP" if self.interfaces[name].up else "NOARP"
                return 0, f"7: {name}: <{flags}> mtu 1420\n", ""
            case ("ip", "-j", "addr", "show", "dev", name):
                if name not in self.interfaces:
                    return 1, "", f'Device "{name}" does not exist.'
                interface = self.interfaces[name]
                flags = ["POINTOPOINT", "NOARP"] + (["UP", "LOWER_UP"] if interface.up else [])
                addresses = [
                    {"family": "inet6", "local": a.split("/")[0], "prefixlen": int(a.split("/")[1])}
                    for a in sorted(interface.addresses)
                ]
                return 0, json.dumps([{"ifname": name, "flags": flags, "addr_info": addresses}]), ""
            case ("ip", "-6", "addr", "add", address, "dev", name):
                self.interfaces[name].addresses.add(address)
                return 0, "", ""
            case ("ip", "link", "set", "up", "dev", name):
                self.interfaces[name].up = True
                return 0, "", ""
            case ("systemd-run", *_, "--", "wg-quick", "up", path):
                self.interfaces[Path(path).stem] = FakeInterface.from_config(Path(path))
                return 0, "", ""
            case ("wg-quick", "up", path):
                self.interfaces[Path(path).stem] = FakeInterface.from_config(Path(path))
                return 0, "", ""
            case ("wg", "show", name, "private-key"):
                if name not in self.interfaces:
                    return 1, "", "Unable to access interface: No such device"
                return 0, f"{self.interfaces[name].private_key or '(none)'}\n", ""
            case ("wg", "show", name, "dump"):
                return 0, self._dump(name), ""
            case ("wg", "addconf", name, "/dev/stdin"):
                self._addconf(self.interfaces[name], stdin or "")
                return 0, "", ""
            case ("wg", "set", name, *rest):
                self._set(self.interfaces[name], list(rest), stdin)
                return 0, "", ""
        return 1, "", f"fake runner does not know {' '.join(argv)}"

    @staticmethod
    def _set(interface: FakeInterface, rest: list[str], stdin: str | None) -> None:
        """`wg set`: listen-port, private-key (from stdin), peer … remove | allowed-ips."""
        while rest:
            word = rest.pop(0)
            if word == "listen-port":
                interface.listen_port = int(rest.pop(0))
            elif word == "private-key":
                rest.pop(0)
                interface.private_key = (stdin or "").strip()
            elif word == "peer":
                key = rest.pop(0)
                action = rest.pop(0)
                if action == "remove":
                    interface.peers.pop(key, None)
                elif action == "allowed-ips":
                    interface.peers[key] = rest.pop(0)

    def _dump(self, name: str) -> str:
        interface = self.interfaces[name]
        public = public_key_of(interface.private_key) if interface.private_key else "serverpublic="
        lines = [f"{SERVER_PRIVATE}\t{public}\t{interface.listen_port}\toff"]
        for key, allowed in interface.peers.items():
            handshake = interface.handshakes.get(key, 0)
            lines.append(f"{key}\t(none)\t(none)\t{allowed}\t{handshake}\t0\t0\toff")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _addconf(interface: FakeInterface, text: str) -> None:
        key = None
        for line in text.splitlines():
            name, _, value = (part.strip() for part in line.partition("="))
            if name == "PublicKey":
                key = line.split("=", 1)[1].strip()
            elif name == "AllowedIPs" and key is not None:
                interface.peers[key] = value

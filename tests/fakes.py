"""Test doubles for unit tests: a clock, and a runner that emulates wg, wg-quick and ip.

The fake runner keeps interfaces in memory. It stands in for WireGuard only in unit
tests of routing and decision logic; the end-to-end tests under tests/e2e run the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from command import CommandFailed, CommandResult

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
            case ("ip", "link", "set", "up", "dev", name):
                self.interfaces[name].up = True
                return 0, "", ""
            case ("systemd-run", *_, "--", "wg-quick", "up", path):
                self.interfaces[Path(path).stem] = FakeInterface()
                return 0, "", ""
            case ("wg-quick", "up", path):
                self.interfaces[Path(path).stem] = FakeInterface()
                return 0, "", ""
            case ("wg", "show", name, "dump"):
                return 0, self._dump(name), ""
            case ("wg", "addconf", name, "/dev/stdin"):
                self._addconf(self.interfaces[name], stdin or "")
                return 0, "", ""
            case ("wg", "set", name, *rest):
                for key in rest[1::3]:
                    self.interfaces[name].peers.pop(key, None)
                return 0, "", ""
        return 1, "", f"fake runner does not know {' '.join(argv)}"

    def _dump(self, name: str) -> str:
        interface = self.interfaces[name]
        lines = [f"{SERVER_PRIVATE}\tserverpublic=\t51820\toff"]
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

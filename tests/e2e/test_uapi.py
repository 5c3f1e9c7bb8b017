"""Peers added over a real wireguard-go's socket, on a connection kept open; `wg` where
the socket is absent."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv6Address
from pathlib import Path

import uapi
from command import CommandResult, CommandRunner
from tests.e2e.harness import Lab, unique, wait_for
from wireguard import WireGuard, generate_keypair


class CountingRunner(CommandRunner):
    """The real runner, remembering every argv it ran."""

    def __init__(self) -> None:
        self.argvs: list[tuple[str, ...]] = []

    async def run(self, argv: Sequence[str], **options: object) -> CommandResult:
        self.argvs.append(tuple(argv))
        return await super().run(argv, **options)  # type: ignore[arg-type]


def wireguard_go(lab: Lab, fleet: str) -> Path:
    """A wireguard-go interface wg_<fleet> in the server namespace; its socket's path."""
    interface = f"wg_{fleet}"
    lab.interfaces.append(interface)  # the lab removes the socket; the namespace, the daemon
    lab.server.run("wireguard-go", interface, timeout=30)
    socket = uapi.SOCKET_DIR / f"{interface}.sock"
    wait_for(socket.exists, 10, f"{socket}")
    return socket


def allowed_ips(lab: Lab, fleet: str) -> dict[str, str]:
    out = lab.server.run("wg", "show", f"wg_{fleet}", "allowed-ips")
    return dict(line.split("\t", 1) for line in out.splitlines() if line)


def batch(count: int, base: int) -> list[tuple[str, IPv6Address]]:
    return [
        (generate_keypair().public_key, IPv6Address(f"fd00:77::{base + n:x}")) for n in range(count)
    ]


async def test_peers_reach_wireguard_go_through_its_socket(lab: Lab, tmp_path: Path) -> None:
    fleet = unique("u")
    wireguard_go(lab, fleet)
    runner = CountingRunner()
    wireguard = WireGuard(runner, tmp_path, uapi_dir=uapi.SOCKET_DIR)
    peers = batch(300, 2)
    await wireguard.add_peers(fleet, peers)
    assert allowed_ips(lab, fleet) == {key: f"{address}/128" for key, address in peers}
    more = batch(2, 0x200)  # a second request on the connection kept open
    await wireguard.add_peers(fleet, more)
    wireguard.close()
    assert allowed_ips(lab, fleet) == {key: f"{address}/128" for key, address in peers + more}
    assert runner.argvs == []  # no `wg` process: requests on the socket


async def test_without_the_socket_wg_adds_the_peers(lab: Lab, tmp_path: Path) -> None:
    """Where the socket directory has no socket for the interface (as with the kernel
    module), the same call falls back to `wg addconf` (which finds the daemon itself)."""
    fleet = unique("u")
    wireguard_go(lab, fleet)
    empty = tmp_path / "no-sockets"
    empty.mkdir()
    runner = CountingRunner()
    wireguard = WireGuard(runner, tmp_path, uapi_dir=empty)
    peers = batch(5, 0x100)
    await wireguard.add_peers(fleet, peers)
    wireguard.close()
    assert allowed_ips(lab, fleet) == {key: f"{address}/128" for key, address in peers}
    assert [argv[:3] for argv in runner.argvs] == [("wg", "addconf", f"wg_{fleet}")]

"""Decisions that make each fleet's interface and rows agree; the database is the truth.

`interface_differences` compares one interface (`ip -j addr`, `wg show dump`) with the
fleet's config; `plan_peers` compares the database's peers with the dump. The sweep in
`pruning.py` (through `drift.py`) applies both at start-up and on every pass, and
`/health` reports the same differences. `find_orphans` finds the rows that an edit of a
fleet's subnet left outside it: they are never deleted without an operator's command.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from config import FleetConfig
from database import Client
from wireguard import InterfaceDump, LinkState

logger = logging.getLogger(__name__)

What = Literal["interface", "link", "address", "port", "key", "peers", "allowed-ips"]


@dataclass(frozen=True)
class Difference:
    """One way an interface differs from what it should be; `text` names it for a person."""

    what: What
    text: str


def interface_differences(
    interface: str,
    settings: FleetConfig,
    public_key: str,
    link: LinkState | None,
    dump: InterfaceDump | None,
) -> list[Difference]:
    """How the interface differs from the config: existence, link, address, port, key.

    `link` None: the interface does not exist. `dump` None: not read (port and key are
    then not judged).
    """
    if link is None:
        return [Difference("interface", f"interface {interface} does not exist")]
    found: list[Difference] = []
    if not link.up:
        found.append(Difference("link", f"interface {interface} is down"))
    wanted = IPv6Interface(settings.interface_address)
    if wanted not in link.addresses:
        found.append(Difference("address", f"interface {interface} lacks its address {wanted}"))
    if dump is not None:
        if dump.listen_port != settings.port:
            found.append(
                Difference(
                    "port",
                    f"interface {interface} listens on port {dump.listen_port}, "
                    f"not {settings.port}",
                )
            )
        if dump.public_key != public_key:
            found.append(
                Difference("key", f"interface {interface} has another key than its config file")
            )
    return found


@dataclass(frozen=True)
class PeerPlan:
    """Peers to remove from the interface, peers to add to it, and peers whose allowed
    IPs must be set back to their address (without removing them)."""

    remove: tuple[str, ...]
    add: tuple[tuple[str, str], ...]
    fix: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.remove and not self.add and not self.fix


def plan_peers(wanted: dict[str, str], dump: InterfaceDump) -> PeerPlan:
    """Compare the database's peers (`wanted`: key → address) with the interface's.

    A known peer whose allowed IPs differ from its address has them replaced in place:
    its endpoint and session stay, so its client's tunnel works again at once.
    """
    remove = [key for key in dump.peers if key not in wanted]
    add = [(key, addr) for key, addr in wanted.items() if key not in dump.peers]
    fix = [
        (key, wanted[key])
        for key, peer in dump.peers.items()
        if key in wanted and peer.allowed_ips != f"{wanted[key]}/128"
    ]
    return PeerPlan(tuple(sorted(remove)), tuple(sorted(add)), tuple(sorted(fix)))


@dataclass(frozen=True)
class Orphan:
    """A client row whose address lies outside its fleet's configured subnet."""

    fleet: str
    address: str
    hostname: str | None
    public_key: str


def find_orphans(session: Session, subnets: dict[str, IPv6Network]) -> list[Orphan]:
    """The rows of the given fleets whose address is outside the fleet's subnet."""
    if not subnets:
        return []
    rows = session.execute(
        select(Client.fleet, Client.address, Client.hostname, Client.public_key)
        .where(Client.fleet.in_(list(subnets)))
        .order_by(Client.fleet, Client.address)
    )
    return [
        Orphan(fleet, address, hostname, key)
        for fleet, address, hostname, key in rows
        if IPv6Address(address) not in subnets[fleet]
    ]


def remove_orphans(session: Session, orphans: Iterable[Orphan]) -> int:
    """Delete exactly these rows (the operator's `main.py orphans --remove`)."""
    keys = [orphan.public_key for orphan in orphans]
    removed = 0
    for start in range(0, len(keys), 500):
        result = session.execute(
            delete(Client).where(Client.public_key.in_(keys[start : start + 500]))
        )
        removed += result.rowcount  # type: ignore[attr-defined]
    session.commit()
    return removed


def describe_orphans(orphans: list[Orphan]) -> dict[str, int]:
    """Fleet → how many of its rows are outside its subnet."""
    counts: dict[str, int] = {}
    for orphan in orphans:
        counts[orphan.fleet] = counts.get(orphan.fleet, 0) + 1
    return counts

"""Decisions that make each fleet's interface and rows agree; the database is the truth.

`plan_peers` compares the database's peers with one `wg show dump`; the sweep in
`pruning.py` applies the plan in bulk at start-up and on every pass (drift repair).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from database import Client
from wireguard import InterfaceDump

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerPlan:
    """Peers to remove from the interface first, then peers to add to it."""

    remove: tuple[str, ...]
    add: tuple[tuple[str, str], ...]

    @property
    def empty(self) -> bool:
        return not self.remove and not self.add


def plan_peers(wanted: dict[str, str], dump: InterfaceDump) -> PeerPlan:
    """Compare the database's peers (`wanted`: key → address) with the interface's.

    A peer whose allowed IPs differ from its address is removed and added again, since
    adding a peer only ever extends its allowed IPs.
    """
    wrong = {
        key
        for key, peer in dump.peers.items()
        if key in wanted and peer.allowed_ips != f"{wanted[key]}/128"
    }
    remove = [key for key in dump.peers if key not in wanted or key in wrong]
    add = [(key, addr) for key, addr in wanted.items() if key not in dump.peers or key in wrong]
    return PeerPlan(tuple(sorted(remove)), tuple(sorted(add)))


def delete_outside_subnet(session: Session, fleet: str, subnet: IPv6Network) -> list[str]:
    """Delete the fleet's rows whose address is no longer in its subnet; return them."""
    rows = session.execute(select(Client.id, Client.address).where(Client.fleet == fleet))
    stray = {row_id: address for row_id, address in rows if IPv6Address(address) not in subnet}
    if stray:
        session.execute(delete(Client).where(Client.id.in_(stray)))
        session.commit()
    return sorted(stray.values())

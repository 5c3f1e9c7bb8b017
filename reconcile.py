"""Make each fleet's interface hold exactly the database's peers.

Used at start-up and by every pruning pass (drift repair): the interface is brought up
when it is missing, then one `wg show dump` is compared with the database and the
difference applied in bulk. The decision is the pure `plan_peers`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv6Address, IPv6Network

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from context import AppContext
from database import Client
from wireguard import InterfaceDump, interface_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerPlan:
    """Peers to remove from the interface first, then peers to add to it."""

    remove: tuple[str, ...]
    add: tuple[tuple[str, IPv6Address], ...]

    @property
    def empty(self) -> bool:
        return not self.remove and not self.add


def plan_peers(wanted: dict[str, IPv6Address], dump: InterfaceDump) -> PeerPlan:
    """Compare the database's peers (`wanted`: key → address) with the interface's.

    A peer whose allowed IPs differ from its address is removed and added again, since
    adding a peer only ever extends its allowed IPs.
    """
    wrong = {
        key
        for key, peer in dump.peers.items()
        if key in wanted and peer.allowed_ips != (f"{wanted[key]}/128",)
    }
    remove = [key for key in dump.peers if key not in wanted or key in wrong]
    add = [(key, addr) for key, addr in wanted.items() if key not in dump.peers or key in wrong]
    return PeerPlan(tuple(sorted(remove)), tuple(sorted(add)))


def select_peers(session: Session, fleet: str) -> dict[str, IPv6Address]:
    rows = session.execute(select(Client.public_key, Client.address).where(Client.fleet == fleet))
    return {key: IPv6Address(address) for key, address in rows}


def delete_outside_subnet(session: Session, fleet: str, subnet: IPv6Network) -> list[str]:
    """Delete the fleet's rows whose address is no longer in its subnet; return them."""
    rows = session.execute(select(Client.id, Client.address).where(Client.fleet == fleet))
    stray = {row_id: address for row_id, address in rows if IPv6Address(address) not in subnet}
    if stray:
        session.execute(delete(Client).where(Client.id.in_(stray)))
        session.commit()
    return sorted(stray.values())


async def ensure_interface(context: AppContext, fleet: str) -> bool:
    """Bring the fleet's interface up if it is not; return whether it had to be."""
    if context.wireguard.is_up(interface_name(fleet)):
        return False
    await context.wireguard.bring_up(fleet)
    return True


async def reconcile_fleet(
    context: AppContext, fleet: str, *, at_startup: bool = False
) -> tuple[PeerPlan, InterfaceDump]:
    """Bring the interface up if needed and apply `plan_peers`; return the plan and dump.

    Holds the fleet's lock, so no registration adds a row or a peer in between.
    """
    interface = interface_name(fleet)
    async with context.fleet_locks[fleet]:
        if await ensure_interface(context, fleet):
            if at_startup:
                logger.info("%s was down; brought it up", interface)
            else:
                logger.warning("%s had gone down; brought it back up", interface)
        # Dump before reading the rows: every peer in the dump then has its row
        # committed already, so no peer being registered can be taken for a stray.
        dump = await context.wireguard.dump(fleet)
        wanted = await context.database.read(lambda session: select_peers(session, fleet))
        plan = plan_peers(wanted, dump)
        await context.wireguard.remove_peers(fleet, plan.remove)
        await context.wireguard.add_peers(fleet, plan.add)
    if not plan.empty:
        logger.info(
            "%s: restored %d peer(s) from the database, removed %d unknown peer(s)",
            interface,
            len(plan.add),
            len(plan.remove),
        )
    return plan, dump


async def reconcile_at_startup(context: AppContext) -> None:
    """Start-up: drop rows outside their subnet, then reconcile every fleet."""
    for fleet, settings in context.config.fleets.items():
        stray = await context.database.write(
            partial(delete_outside_subnet, fleet=fleet, subnet=settings.subnet)
        )
        if stray:
            logger.warning(
                "fleet %s: deleted %d client(s) whose address is outside %s: %s",
                fleet,
                len(stray),
                settings.subnet,
                ", ".join(stray[:10]) + (" …" if len(stray) > 10 else ""),
            )
        plan, dump = await reconcile_fleet(context, fleet, at_startup=True)
        logger.info(
            "%s: up with %d peer(s) (%d restored, %d removed)",
            interface_name(fleet),
            len(dump.peers) - len(plan.remove) + len(plan.add),
            len(plan.add),
            len(plan.remove),
        )

"""Leaving: a client that shuts down cleanly removes itself at once instead of waiting
to be pruned, so that its name is free for the next machine.

The row goes first (the database is the truth), then the published files follow; the
peer is removed a moment later, once the answer — which travels through the very
tunnel being removed — is on its way. Should the process stop in between, start-up
reconciliation removes the peer the database no longer knows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from ipaddress import IPv6Address

from sqlalchemy import select
from sqlalchemy.orm import Session

from command import CommandError
from context import AppContext
from database import CLIENTS, delete_client_at
from events import Subject, record
from registry import local_fleet

logger = logging.getLogger(__name__)

# Seconds between answering a leave and removing the peer: the answer must have left
# through the tunnel first. Tests set it to 0.
PEER_GRACE = 1.0


def delete_client(
    session: Session, fleet: str, address: str, node: str = "", time: datetime | None = None
) -> tuple[str, str | None]:
    """Delete the fleet's client at `address`, with its `left` event (when `time` is
    given); its (public key, hostname).

    Raises `ClientNotFound` when there is none."""
    public_key, hostname = delete_client_at(
        session,
        fleet,
        address,
        f"No client with address {address} is registered in fleet {fleet}; "
        "there is nothing to leave.",
    )
    if time is not None:
        subject = Subject(address, public_key, hostname)
        record(session, "left", fleet=fleet, node=node, time=time, subject=subject)
    session.commit()
    return public_key, hostname


def is_registered(session: Session, public_key: str) -> bool:
    found = session.scalar(select(CLIENTS.c.id).where(CLIENTS.c.public_key == public_key))
    return found is not None


async def leave_fleet(
    context: AppContext, fleet: str, address: IPv6Address
) -> Callable[[], Awaitable[None]]:
    """Remove the client at `address` from the database, the roster and the published
    files; return the job that then removes its peer from the interface.

    Raises `FleetNotFound`, `ServedElsewhere` or `ClientNotFound`.
    """
    local_fleet(context.config, fleet)
    at = str(address)
    async with context.fleet_locks[fleet]:
        public_key, hostname = await context.database.write(
            partial(
                delete_client,
                fleet=fleet,
                address=at,
                node=context.config.node_of(fleet),
                time=context.clock(),
            )
        )
        context.roster.remove(fleet, [at])
    logger.info("fleet %s: %s (%s) left", fleet, at, hostname or "no name")
    await context.publisher.refresh()

    async def remove_peer() -> None:
        await asyncio.sleep(PEER_GRACE)
        async with context.fleet_locks[fleet]:
            # The same key may have registered again in the meantime: then it stays.
            if await context.database.read(partial(is_registered, public_key=public_key)):
                return
            try:
                await context.wireguard.remove_peers(fleet, [public_key])
            except CommandError as error:
                # The next pass removes the peer the database no longer knows.
                logger.error("fleet %s: could not remove the peer of %s: %s", fleet, at, error)

    return remove_peer

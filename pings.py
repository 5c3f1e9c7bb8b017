"""Pings: keep a client alive and, when it asks, give it a unique name in its fleet.

The common ping changes nothing but the time: it is answered after one indexed read
and its time goes to the write-behind buffer. A ping that changes the name is
committed (one writer job) before it is answered, and the hosts file follows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv6Address

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from activity import ActivityBuffer, store_activity
from config import Config
from database import Client, Database
from errors import Busy, ClientNotFound
from events import Subject, record
from hostnames import choose_hostname, search_prefix
from hosts import Publisher, fqdn
from listing import prefix_range
from metrics import Metrics
from registry import Clock, local_fleet
from roster import Roster

logger = logging.getLogger(__name__)

NAME_ATTEMPTS = 5


@dataclass(frozen=True)
class PingResult:
    hostname: str | None
    fqdn: str | None


def names_like(
    session: Session, fleet: str, requested: str, separator: str, own_id: int
) -> set[str]:
    """Names held by the fleet's other clients that could collide with `requested`."""
    rows = session.scalars(
        select(Client.hostname).where(
            Client.fleet == fleet,
            Client.id != own_id,
            prefix_range(Client.hostname, search_prefix(requested, separator)),
        )
    )
    return {name for name in rows if name is not None}


def select_caller(
    session: Session, fleet: str, address: IPv6Address
) -> tuple[int, str | None, str | None]:
    row = session.execute(
        select(Client.id, Client.hostname, Client.requested_hostname).where(
            Client.fleet == fleet, Client.address == str(address)
        )
    ).one_or_none()
    if row is None:
        raise ClientNotFound(
            f"No client with address {address} is registered in fleet {fleet}; register again."
        )
    return row.id, row.hostname, row.requested_hostname


class Pinger:
    def __init__(
        self,
        config: Config,
        database: Database,
        activity: ActivityBuffer,
        publisher: Publisher,
        roster: Roster,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._config = config
        self._database = database
        self._activity = activity
        self._roster = roster
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock

    async def ping(self, fleet: str, address: IPv6Address, hostname: str | None) -> PingResult:
        """Record that the client at `address` is alive and, with `hostname`, name it.

        Raises `FleetNotFound` or `ClientNotFound`. A changed name is committed before
        this returns.
        """
        local_fleet(self._config, fleet)
        now = self._clock()
        separator = self._config.hostname_separator
        at = str(address)

        # The common case, answered from memory: a known client whose name stays as it is.
        member = self._roster.find(fleet, at)
        if member is not None and self._activity.mark(fleet) is not None:
            current = member.hostname
            if hostname is None or hostname == current == member.requested_hostname:
                self._activity.note(fleet, at, now)
                return self._answer(fleet, current)

        def unchanged(session: Session) -> tuple[int, str | None] | None:
            """The caller's row id and name when this ping changes no name, else None."""
            row_id, current, requested = select_caller(session, fleet, address)
            if hostname is None or (hostname == current == requested):
                return row_id, current
            if requested != hostname:
                return None
            taken = names_like(session, fleet, hostname, separator, row_id)
            keep = choose_hostname(
                hostname,
                current=current,
                current_request=requested,
                taken=taken,
                separator=separator,
            )
            return (row_id, current) if keep == current else None

        def rename(session: Session) -> tuple[str | None, str | None, bool]:
            for _ in range(NAME_ATTEMPTS):
                row_id, current, requested = select_caller(session, fleet, address)
                assigned = current
                if hostname is not None:
                    requested_now: str | None = hostname
                    assigned = choose_hostname(
                        hostname,
                        current=current,
                        current_request=requested,
                        taken=names_like(session, fleet, hostname, separator, row_id),
                        separator=separator,
                    )
                    client = session.get_one(Client, row_id)
                    if assigned != current:
                        record(
                            session,
                            "renamed",
                            fleet=fleet,
                            node=self._config.node_of(fleet),
                            time=now,
                            subject=Subject(at, client.public_key, assigned),
                            detail={"from": current, "to": assigned},
                        )
                    client.hostname, client.requested_hostname = assigned, hostname
                else:
                    requested_now = requested
                store_activity(session, {(fleet, at): now})
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()  # another node took the name first: choose again
                    continue
                return assigned, requested_now, assigned != current
            raise Busy("The hostname could not be stored; try again.")

        mark = self._activity.mark(fleet)
        if mark is not None:
            quiet = await self._database.read(unchanged)
            # A sweep that began while we read might prune this client before a buffered
            # time is stored: then the ping is committed instead, in order with the sweep.
            if quiet is not None and self._activity.still_quiet(fleet, mark):
                _, current = quiet
                self._activity.note(fleet, at, now)
                return self._answer(fleet, current)
        assigned, requested_now, renamed = await self._database.write(rename)
        self._roster.rename(fleet, at, assigned, requested_now)
        if renamed:
            logger.info("fleet %s: %s is now called %s", fleet, address, assigned)
            await self._publisher.refresh()
        return self._answer(fleet, assigned)

    def _answer(self, fleet: str, hostname: str | None) -> PingResult:
        self._metrics.pinged(fleet)
        if hostname is None:
            return PingResult(None, None)
        return PingResult(hostname, fqdn(hostname, fleet, self._config.domain))

"""Pings: keep a client alive and, when it asks, give it a unique name in its fleet.

The common ping changes nothing but the time: it is answered after one indexed read
and its time goes to the write-behind buffer. A ping that changes the name or the
labels is committed (one writer job) before it is answered, and the hosts file follows.
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
from labels import Labels, label_text, stored
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
    labels: Labels


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
) -> tuple[int, str | None, str | None, Labels]:
    """The caller's row id, name, requested name and labels; `ClientNotFound` if none."""
    row = session.execute(
        select(Client.id, Client.hostname, Client.requested_hostname, Client.labels).where(
            Client.fleet == fleet, Client.address == str(address)
        )
    ).one_or_none()
    if row is None:
        raise ClientNotFound(
            f"No client with address {address} is registered in fleet {fleet}; register again."
        )
    return row.id, row.hostname, row.requested_hostname, stored(row.labels)


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

    async def ping(
        self,
        fleet: str,
        address: IPv6Address,
        hostname: str | None,
        labels: Labels | None = None,
    ) -> PingResult:
        """Record that the client at `address` is alive and, with `hostname`, name it;
        with `labels` (validated already), replace its labels (`{}` clears them).

        Raises `FleetNotFound` or `ClientNotFound`. A changed name or label set is
        committed before this returns.
        """
        local_fleet(self._config, fleet)
        now = self._clock()
        separator = self._config.hostname_separator
        at = str(address)

        # The common case, answered from memory: a known client whose name stays as it is.
        member = self._roster.find(fleet, at)
        if member is not None and self._activity.mark(fleet) is not None:
            current = member.hostname
            same_labels = labels is None or labels == stored(member.labels)
            if same_labels and (
                hostname is None or hostname == current == member.requested_hostname
            ):
                self._activity.note(fleet, at, now)
                return self._answer(fleet, current, stored(member.labels))

        def unchanged(session: Session) -> tuple[int, str | None, Labels] | None:
            """The caller's row id, name and labels when this ping changes neither, else
            None."""
            row_id, current, requested, held = select_caller(session, fleet, address)
            if labels is not None and labels != held:
                return None
            if hostname is None or (hostname == current == requested):
                return row_id, current, held
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
            return (row_id, current, held) if keep == current else None

        def rename(session: Session) -> tuple[str | None, str | None, Labels, bool, bool]:
            for _ in range(NAME_ATTEMPTS):
                row_id, current, requested, held = select_caller(session, fleet, address)
                assigned = current
                client = session.get_one(Client, row_id)
                if labels is not None and labels != held:
                    client.labels = dict(labels) or None
                if hostname is not None:
                    requested_now: str | None = hostname
                    assigned = choose_hostname(
                        hostname,
                        current=current,
                        current_request=requested,
                        taken=names_like(session, fleet, hostname, separator, row_id),
                        separator=separator,
                    )
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
                labels_now = held if labels is None else labels
                return (
                    assigned,
                    requested_now,
                    labels_now,
                    assigned != current,
                    labels_now != held,
                )
            raise Busy("The hostname could not be stored; try again.")

        mark = self._activity.mark(fleet)
        if mark is not None:
            quiet = await self._database.read(unchanged)
            # A sweep that began while we read might prune this client before a buffered
            # time is stored: then the ping is committed instead, in order with the sweep.
            if quiet is not None and self._activity.still_quiet(fleet, mark):
                _, current, held = quiet
                self._activity.note(fleet, at, now)
                return self._answer(fleet, current, held)
        assigned, requested_now, labels_now, renamed, relabelled = await self._database.write(
            rename
        )
        self._roster.rename(fleet, at, assigned, requested_now, labels_now)
        if renamed:
            logger.info("fleet %s: %s is now called %s", fleet, address, assigned)
        if relabelled:
            logger.info("fleet %s: %s has the labels {%s}", fleet, address, label_text(labels_now))
        if renamed or relabelled:
            await self._publisher.refresh()
        return self._answer(fleet, assigned, labels_now)

    def _answer(self, fleet: str, hostname: str | None, labels: Labels) -> PingResult:
        self._metrics.pinged(fleet)
        if hostname is None:
            return PingResult(None, None, labels)
        return PingResult(hostname, fqdn(hostname, fleet, self._config.domain), labels)

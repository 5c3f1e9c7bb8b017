"""Lifetimes: how long a fleet's clients are kept, and when the fleet itself ends.

A pass prunes a client for one of three reasons, recorded in its `pruned` event:
`inactive` (last activity older than the fleet's `prune_timeout`), `pending` (never
completed a handshake within `pending_timeout`) or `expired` (the fleet's `expires_at`
has passed: every client goes, and register and ping answer 410). The same pass
records the `online`/`offline` transitions it observes, once each (the state last
reported is kept in the client's row, so a restart does not repeat one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config import Config, FleetConfig
from database import CLIENTS
from errors import FleetExpired
from events import Subject, record_many

CHUNK = 500  # keys per IN (...) list


@dataclass(frozen=True)
class Pruned:
    public_key: str
    address: str
    hostname: str | None
    reason: str = "inactive"


@dataclass(frozen=True)
class Lifetime:
    """What one pass decides for one fleet, before it touches the database."""

    node: str
    now: datetime
    pending_cutoff: datetime | None  # never-connected clients active before it go
    expired: bool
    online: frozenset[str] = field(default_factory=frozenset)  # keys online in the dump


def is_expired(settings: FleetConfig, now: datetime) -> bool:
    return settings.expires_at is not None and now >= settings.expires_at


def check_open(settings: FleetConfig, fleet: str, now: datetime) -> None:
    """Raise `FleetExpired` once the fleet's `expires_at` has passed."""
    if settings.expires_at is not None and now >= settings.expires_at:
        ended = settings.expires_at.isoformat().replace("+00:00", "Z")
        raise FleetExpired(f"Fleet {fleet} ended at {ended}; it takes no more clients or pings.")


def fleet_lifetime(
    config: Config, fleet: str, now: datetime, started_at: datetime, online: Iterable[str]
) -> Lifetime:
    """The pure decision: the pending cutoff (with the start-up grace that inactivity
    has too) and whether the fleet has expired."""
    cutoff = now - config.pending_timeout_of(fleet)
    return Lifetime(
        node=config.node_of(fleet),
        now=now,
        pending_cutoff=None if started_at >= cutoff else cutoff,
        expired=is_expired(config.fleets[fleet], now),
        online=frozenset(online),
    )


def select_doomed(
    session: Session, fleet: str, cutoff: datetime | None, lifetime: Lifetime
) -> list[Pruned]:
    """The fleet's clients this pass prunes, each with its reason (not yet deleted)."""
    columns = (CLIENTS.c.public_key, CLIENTS.c.address, CLIENTS.c.hostname)
    in_fleet = select(*columns).where(CLIENTS.c.fleet == fleet)
    if lifetime.expired:
        return [Pruned(*row, reason="expired") for row in session.execute(in_fleet)]
    doomed: dict[str, Pruned] = {}
    if cutoff is not None:
        for row in session.execute(in_fleet.where(CLIENTS.c.last_active < cutoff)):
            doomed[row.public_key] = Pruned(*row, reason="inactive")
    if lifetime.pending_cutoff is not None:
        never = in_fleet.where(
            CLIENTS.c.last_handshake.is_(None), CLIENTS.c.last_active < lifetime.pending_cutoff
        )
        for row in session.execute(never):
            doomed.setdefault(row.public_key, Pruned(*row, reason="pending"))
    return list(doomed.values())


def store_presence(session: Session, fleet: str, lifetime: Lifetime, pruned: list[Pruned]) -> None:
    """Record `pruned` events and the online/offline transitions, in the caller's
    transaction (after the pruned rows are deleted, so they get no `offline`)."""
    record_many(
        session,
        "pruned",
        fleet=fleet,
        node=lifetime.node,
        time=lifetime.now,
        items=[
            (Subject(c.address, c.public_key, c.hostname), {"reason": c.reason}) for c in pruned
        ],
    )
    reported = set(
        session.scalars(
            select(CLIENTS.c.public_key).where(
                CLIENTS.c.fleet == fleet, CLIENTS.c.reported_online.is_(True)
            )
        )
    )
    gone = {c.public_key for c in pruned}
    for kind, keys, state in (
        ("online", sorted(lifetime.online - reported - gone), True),
        ("offline", sorted(reported - lifetime.online), False),
    ):
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            rows = session.execute(
                select(CLIENTS.c.public_key, CLIENTS.c.address, CLIENTS.c.hostname)
                .where(CLIENTS.c.fleet == fleet, CLIENTS.c.public_key.in_(chunk))
                .order_by(CLIENTS.c.address)
            ).all()
            session.execute(
                update(CLIENTS)
                .where(CLIENTS.c.public_key.in_([row.public_key for row in rows]))
                .values(reported_online=state)
            )
            record_many(
                session,
                kind,
                fleet=fleet,
                node=lifetime.node,
                time=lifetime.now,
                items=[(Subject(row.address, row.public_key, row.hostname), None) for row in rows],
            )

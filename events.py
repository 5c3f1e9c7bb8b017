"""The durable event log: one row per lifecycle change, written in the change's transaction.

Every writer that changes a client calls `record` (or `record_many`) with the session it
is about to commit, so an event exists exactly when its change does: none lost, none
invented. Events are read by `GET /api/events`, the fleet page and the webhook
deliverer (webhooks.py), and deleted after `event_retention` by the pruning pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Index, Integer, String, Table, Text, delete, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from config import EVENT_TYPES
from database import Base, UTCDateTime, text

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_time", "time"),
        Index("ix_events_fleet_id", "fleet", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    type: Mapped[str] = mapped_column(text(16))
    fleet: Mapped[str] = mapped_column(text(32))
    node: Mapped[str] = mapped_column(text(63))
    address: Mapped[str | None] = mapped_column(text(39))
    public_key: Mapped[str | None] = mapped_column(text(44))
    hostname: Mapped[str | None] = mapped_column(text(63))
    detail: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")


EVENTS: Table = Event.__table__  # type: ignore[assignment]


class ServerKey(Base):
    """The last server public key seen per fleet, so a new one is reported once."""

    __tablename__ = "server_keys"

    fleet: Mapped[str] = mapped_column(text(32), primary_key=True)
    public_key: Mapped[str] = mapped_column(text(44))


class WebhookCursor(Base):
    """Per node and webhook URL ("<node> <url>"), the id of the last event handed over
    (delivered or given up)."""

    __tablename__ = "webhook_cursors"

    url: Mapped[str] = mapped_column(String(2000), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class Subject:
    """The client an event is about (None fields for fleet-wide events)."""

    address: str | None = None
    public_key: str | None = None
    hostname: str | None = None


def record(
    session: Session,
    kind: str,
    *,
    fleet: str,
    node: str,
    time: datetime,
    subject: Subject = Subject(),
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Add one event to the session's transaction; the caller commits it with its change."""
    record_many(session, kind, fleet=fleet, node=node, time=time, items=[(subject, detail)])


def record_many(
    session: Session,
    kind: str,
    *,
    fleet: str,
    node: str,
    time: datetime,
    items: Iterable[tuple[Subject, Mapping[str, Any] | None]],
) -> None:
    """Add events of one kind in one statement (a sweep may prune thousands)."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event type {kind!r}")
    rows = [
        {
            "time": time,
            "type": kind,
            "fleet": fleet,
            "node": node,
            "address": subject.address,
            "public_key": subject.public_key,
            "hostname": subject.hostname,
            "detail": json.dumps(dict(detail or {}), sort_keys=True),
        }
        for subject, detail in items
    ]
    if rows:
        session.execute(insert(EVENTS), rows)  # Core: no ORM bookkeeping per row


def as_json(event: Event) -> dict[str, Any]:
    """The event object of the API and of webhook bodies."""
    return {
        "id": event.id,
        "time": event.time.isoformat().replace("+00:00", "Z"),
        "type": event.type,
        "fleet": event.fleet,
        "node": event.node,
        "address": event.address,
        "public_key": event.public_key,
        "hostname": event.hostname,
        "detail": json.loads(event.detail),
    }


def select_events(
    session: Session,
    *,
    after: int = 0,
    fleets: Iterable[str] = (),
    types: Iterable[str] = (),
    limit: int = DEFAULT_LIMIT,
) -> list[Event]:
    """Events with an id above `after`, oldest first, optionally of some fleets/types."""
    query = select(Event).where(Event.id > after)
    fleets, types = list(fleets), list(types)
    if fleets:
        query = query.where(Event.fleet.in_(fleets))
    if types:
        query = query.where(Event.type.in_(types))
    return list(session.scalars(query.order_by(Event.id).limit(limit)))


def latest_events(session: Session, fleet: str, count: int) -> list[Event]:
    """The fleet's newest `count` events, newest first (for the fleet page)."""
    query = select(Event).where(Event.fleet == fleet).order_by(Event.id.desc()).limit(count)
    return list(session.scalars(query))


def delete_expired(session: Session, now: datetime, retention: timedelta) -> int:
    """Delete events older than `retention`; commit; return how many went."""
    result = session.execute(delete(Event).where(Event.time < now - retention))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def forget_registered(session: Session, keys: list[str]) -> None:
    """Delete the `registered` events of registrations being undone (in their transaction)."""
    session.execute(delete(Event).where(Event.type == "registered", Event.public_key.in_(keys)))


def note_server_key(
    session: Session, fleet: str, public_key: str, *, node: str, time: datetime
) -> bool:
    """Remember the fleet's server key; a key that differs from the one remembered is a
    `key_changed` event (the first one seen is only remembered). Commits; True if changed."""
    known = session.get(ServerKey, fleet)
    changed = known is not None and known.public_key != public_key
    if changed and known is not None:
        record(
            session,
            "key_changed",
            fleet=fleet,
            node=node,
            time=time,
            subject=Subject(public_key=public_key),
            detail={"from": known.public_key, "to": public_key},
        )
        known.public_key = public_key
    elif known is None:
        session.add(ServerKey(fleet=fleet, public_key=public_key))
    session.commit()
    return changed

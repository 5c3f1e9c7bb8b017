"""Removing clients by hand, and bans: keys whose registration is refused.

`remove_client` deletes one client with its `removed` event (and, asked to ban, its key's
ban with a `banned` event) in one transaction. Registration consults the bans in the
same transaction that stores the batch (registry.py), so a ban cannot be raced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Mapped, Session, mapped_column

from database import Base, UTCDateTime, delete_client_at, text
from errors import Forbidden, WgFleetError
from events import Subject, record


class Ban(Base):
    __tablename__ = "bans"

    public_key: Mapped[str] = mapped_column(text(44), primary_key=True)
    fleet: Mapped[str] = mapped_column(text(32))
    address: Mapped[str | None] = mapped_column(text(39))
    hostname: Mapped[str | None] = mapped_column(text(63))
    banned_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BanNotFound(WgFleetError):
    status_code = 404


def refusal() -> Forbidden:
    return Forbidden(
        "This public key is banned: its client was removed by an administrator. "
        "Ask the operator to lift the ban."
    )


def banned_among(session: Session, keys: Iterable[str]) -> set[str]:
    """The keys of `keys` that are banned."""
    wanted = list(set(keys))
    if not wanted:
        return set()
    return set(session.scalars(select(Ban.public_key).where(Ban.public_key.in_(wanted))))


@dataclass(frozen=True)
class Removed:
    public_key: str
    address: str
    hostname: str | None


def remove_client(
    session: Session, fleet: str, address: str, *, ban: bool, node: str, time: datetime
) -> Removed:
    """Delete the fleet's client at `address` (and ban its key); commit.

    Raises `ClientNotFound` when there is none."""
    public_key, hostname = delete_client_at(
        session,
        fleet,
        address,
        f"No client with address {address} is registered in fleet {fleet}.",
    )
    subject = Subject(address, public_key, hostname)
    record(session, "removed", fleet=fleet, node=node, time=time, subject=subject)
    if ban:
        if session.get(Ban, public_key) is None:
            session.add(
                Ban(
                    public_key=public_key,
                    fleet=fleet,
                    address=address,
                    hostname=hostname,
                    banned_at=time,
                )
            )
        record(session, "banned", fleet=fleet, node=node, time=time, subject=subject)
    session.commit()
    return Removed(public_key, address, hostname)


def list_bans(session: Session) -> list[Ban]:
    return list(session.scalars(select(Ban).order_by(Ban.banned_at, Ban.public_key)))


def lift_ban(session: Session, public_key: str) -> None:
    """Delete the ban of `public_key`; commit. Raises `BanNotFound`."""
    ban = session.get(Ban, public_key)
    if ban is None:
        raise BanNotFound("This public key is not banned.")
    session.delete(ban)
    session.commit()

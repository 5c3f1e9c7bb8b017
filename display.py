"""What admins see of a client: view models and the formatting the templates use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from database import Client
from hosts import fqdn
from labels import stored
from status import is_online
from wireguard import InterfaceDump

AliveBecause = Literal["registration", "ping", "handshake", "grace"]


@dataclass(frozen=True)
class FleetSummary:
    name: str
    node: str
    interface: str
    subnet: str
    endpoint: str
    clients: int
    online: int
    named: int


@dataclass(frozen=True)
class ClientView:
    address: str
    hostname: str | None
    fqdn: str | None
    public_key: str
    source_ip: str
    registered_at: datetime
    last_seen: datetime
    last_handshake: datetime | None
    last_activity: datetime
    alive_because: AliveBecause
    online: bool
    labels: Mapping[str, str] = field(default_factory=dict)


def client_view(
    row: Client, *, domain: str, dump: InterfaceDump | None, now: datetime, started_at: datetime
) -> ClientView:
    """Merge a row with the live dump: the interface's handshake wins when newer."""
    handshake = row.last_handshake
    peer = dump.peers.get(row.public_key) if dump else None
    if peer and peer.latest_handshake and (handshake is None or peer.latest_handshake > handshake):
        handshake = peer.latest_handshake
    reasons: list[tuple[datetime, AliveBecause]] = [
        (row.last_seen, "registration" if row.last_seen == row.registered_at else "ping"),
        (started_at, "grace"),
    ]
    if handshake is not None:
        reasons.append((handshake, "handshake"))
    last_activity, because = max(reasons, key=lambda reason: reason[0])
    return ClientView(
        address=row.address,
        hostname=row.hostname,
        fqdn=fqdn(row.hostname, row.fleet, domain) if row.hostname else None,
        public_key=row.public_key,
        source_ip=row.source_ip,
        registered_at=row.registered_at,
        last_seen=row.last_seen,
        last_handshake=handshake,
        last_activity=last_activity,
        alive_because=because,
        online=is_online(handshake, now),
        labels=stored(row.labels),
    )


def relative_time(moment: datetime | None, now: datetime) -> str:
    """`12 s ago`, `3 min ago`, `5 h ago`, `2 d ago`; "N/A" for no moment."""
    if moment is None:
        return "N/A"
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def utc_text(moment: datetime | None) -> str:
    return "N/A" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def short_key(key: str) -> str:
    return f"{key[:8]}…{key[-6:]}"

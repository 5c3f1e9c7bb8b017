"""The hosts file: `<address> <hostname>.<fleet>.<domain>` for every named client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from ipaddress import IPv6Address
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from database import Client, Database
from files import write_if_changed

logger = logging.getLogger(__name__)

HOSTS_MODE = 0o644


def fqdn(hostname: str, fleet: str, domain: str) -> str:
    return f"{hostname}.{fleet}.{domain}"


def render_hosts(entries: Iterable[tuple[str, str, str]], domain: str) -> str:
    """Hosts-file text for (fleet, address, hostname) entries, sorted by address then name."""
    lines = sorted(
        (IPv6Address(address), fqdn(hostname, fleet, domain))
        for fleet, address, hostname in entries
    )
    return "".join(f"{address} {name}\n" for address, name in lines)


def select_named(session: Session, fleets: Iterable[str]) -> list[tuple[str, str, str]]:
    rows = session.execute(
        select(Client.fleet, Client.address, Client.hostname).where(
            Client.fleet.in_(list(fleets)), Client.hostname.is_not(None)
        )
    )
    return [(fleet, address, hostname or "") for fleet, address, hostname in rows]


class HostsFile:
    """Rewrites the hosts file from the database; concurrent refreshes coalesce into one."""

    def __init__(self, path: Path, database: Database, fleets: Iterable[str], domain: str) -> None:
        self.path = path
        self._database = database
        self._fleets = list(fleets)
        self._domain = domain
        self._lock = asyncio.Lock()
        self._pending = False

    async def refresh(self) -> None:
        """Write the file if its content changed. A call made while a write is under way
        causes one more write after it, never one per call."""
        self._pending = True
        if self._lock.locked():
            return
        async with self._lock:
            while self._pending:
                self._pending = False
                entries = await self._database.read(
                    lambda session: select_named(session, self._fleets)
                )
                text = render_hosts(entries, self._domain)
                try:
                    written = await asyncio.to_thread(write_if_changed, self.path, text, HOSTS_MODE)
                except OSError as error:
                    # The next refresh (at the latest the next pruning pass) tries again.
                    logger.error("cannot write %s: %s", self.path, error)
                    continue
                if written:
                    logger.info("wrote %s with %d name(s)", self.path, len(entries))

"""Registration and pings: a client row and its WireGuard peer, created together or not
at all, then kept alive and named by the client's pings.

The row is committed first, then the peer is added; when adding the peer fails the row
is deleted again before the caller hears of it. A crash between the two leaves a row
without a peer, which the next reconciliation pass repairs (the database is the truth).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv6Address

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from addresses import ENUMERATE_LIMIT, IPAddress, free_addresses, random_candidates
from command import CommandError
from config import Config, FleetConfig
from database import Client, Database
from errors import (
    Busy,
    ClientNotFound,
    FleetNotFound,
    KeyInOtherFleet,
    PoolExhausted,
    WireGuardUnavailable,
)
from hostnames import choose_hostname, search_prefix
from hosts import HostsFile, fqdn
from metrics import Metrics
from wireguard import WireGuard, generate_keypair, render_client_config

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 16
SAMPLE_ROUNDS = 8
INSERT_ATTEMPTS = 5

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Registration:
    address: IPv6Address
    public_key: str
    config: str
    created: bool


def pick_address(session: Session, fleet: str, settings: FleetConfig) -> IPv6Address:
    """An address of the fleet's subnet that no client holds; `PoolExhausted` if none."""
    subnet, server = settings.subnet, settings.ip6
    in_fleet = select(Client.address).where(Client.fleet == fleet)
    if subnet.num_addresses <= ENUMERATE_LIMIT:
        free = free_addresses(subnet, server, session.scalars(in_fleet))
        if free:
            return free[secrets.randbelow(len(free))]
    else:
        for _ in range(SAMPLE_ROUNDS):
            candidates = random_candidates(subnet, server, SAMPLE_SIZE)
            taken = set(session.scalars(in_fleet.where(Client.address.in_(map(str, candidates)))))
            for candidate in candidates:
                if str(candidate) not in taken:
                    return candidate
    raise PoolExhausted(f"Fleet {fleet} has no free address left in {subnet}.")


class Registry:
    """Registers clients into fleets; one instance per running app."""

    def __init__(
        self,
        config: Config,
        database: Database,
        wireguard: WireGuard,
        server_keys: dict[str, str],
        clock: Clock,
        fleet_locks: dict[str, asyncio.Lock],
        hosts: HostsFile,
        metrics: Metrics,
    ) -> None:
        self._hosts = hosts
        self._metrics = metrics
        self._config = config
        self._database = database
        self._wireguard = wireguard
        self._server_keys = server_keys
        self._clock = clock
        self._locks = fleet_locks

    def fleet(self, name: str) -> FleetConfig:
        try:
            return self._config.fleets[name]
        except KeyError:
            raise FleetNotFound(name) from None

    async def register(
        self, fleet: str, public_key: str | None, source_ip: IPAddress
    ) -> Registration:
        """Register a client, with its own public key or a key pair made here.

        Raises `FleetNotFound`, `KeyInOtherFleet`, `PoolExhausted` or `WireGuardUnavailable`;
        after any of them nothing of this request remains.
        """
        settings = self.fleet(fleet)
        keys = generate_keypair() if public_key is None else None
        key = keys.public_key if keys is not None else str(public_key)
        now = self._clock()
        async with self._locks[fleet]:
            row, created = await self._database.write(
                lambda session: self._store(session, fleet, settings, key, str(source_ip), now)
            )
            try:
                await self._wireguard.add_peers(fleet, [(key, IPv6Address(row.address))])
            except CommandError as error:
                if created:
                    await self._database.write(lambda session: _delete(session, row.id))
                logger.error("registration in fleet %s failed: %s", fleet, error)
                raise WireGuardUnavailable(
                    "WireGuard could not add the peer; nothing was registered. Try again later."
                ) from None
        self._metrics.registrations.labels(fleet=fleet).inc()
        if created:
            logger.info("registered %s in fleet %s from %s", row.address, fleet, source_ip)
        config = render_client_config(
            private_key=keys.private_key if keys else None,
            address=IPv6Address(row.address),
            server_public_key=self._server_keys[fleet],
            fleet=settings,
        )
        return Registration(IPv6Address(row.address), key, config, created)

    async def ping(self, fleet: str, address: IPv6Address, hostname: str | None) -> PingResult:
        """Record that the client at `address` is alive and, with `hostname`, name it.

        Raises `FleetNotFound` or `ClientNotFound`. A changed name is committed before
        this returns; the hosts file follows right after.
        """
        self.fleet(fleet)
        now = self._clock()
        separator = self._config.hostname_separator

        def record(session: Session) -> tuple[str | None, bool]:
            for _ in range(INSERT_ATTEMPTS):
                row = session.scalar(
                    select(Client).where(Client.fleet == fleet, Client.address == str(address))
                )
                if row is None:
                    raise ClientNotFound(
                        f"No client with address {address} is registered in fleet {fleet}; "
                        "register again."
                    )
                row.last_seen = max(row.last_seen, now)
                row.last_active = max(row.last_active, now)
                previous = row.hostname
                if hostname is not None:
                    row.hostname = choose_hostname(
                        hostname,
                        current=row.hostname,
                        current_request=row.requested_hostname,
                        taken=_names_like(session, fleet, hostname, separator, row.id),
                        separator=separator,
                    )
                    row.requested_hostname = hostname
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()  # another node took the name first: choose again
                    continue
                return row.hostname, row.hostname != previous
            raise Busy("The hostname could not be stored; try again.")

        assigned, renamed = await self._database.write(record)
        self._metrics.pings.labels(fleet=fleet).inc()
        if renamed:
            logger.info("fleet %s: %s is now called %s", fleet, address, assigned)
            await self._hosts.refresh()
        if assigned is None:
            return PingResult(None, None)
        return PingResult(assigned, fqdn(assigned, fleet, self._config.domain))

    @staticmethod
    def _store(
        session: Session,
        fleet: str,
        settings: FleetConfig,
        public_key: str,
        source_ip: str,
        now: datetime,
    ) -> tuple[Client, bool]:
        """Insert the client's row, or refresh the existing row of the same key."""
        for _ in range(INSERT_ATTEMPTS):
            existing = session.scalar(select(Client).where(Client.public_key == public_key))
            if existing is not None:
                if existing.fleet != fleet:
                    raise KeyInOtherFleet(
                        f"This public key is already registered in fleet {existing.fleet!r}."
                    )
                existing.last_seen = max(existing.last_seen, now)
                existing.last_active = max(existing.last_active, now)
                existing.source_ip = source_ip
                session.commit()
                return existing, False
            row = Client(
                fleet=fleet,
                address=str(pick_address(session, fleet, settings)),
                public_key=public_key,
                source_ip=source_ip,
                registered_at=now,
                last_seen=now,
                last_active=now,
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                # Another writer (another node sharing the database) took the address
                # or the key first: look again.
                session.rollback()
                continue
            return row, True
        raise PoolExhausted(f"Fleet {fleet} could not allocate an address; try again.")


def _delete(session: Session, client_id: int) -> None:
    session.execute(delete(Client).where(Client.id == client_id))
    session.commit()


@dataclass(frozen=True)
class PingResult:
    hostname: str | None
    fqdn: str | None


def _names_like(
    session: Session, fleet: str, requested: str, separator: str, own_id: int
) -> set[str]:
    """Names held by the fleet's other clients that could collide with `requested`."""
    prefix = search_prefix(requested, separator)
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = session.scalars(
        select(Client.hostname).where(
            Client.fleet == fleet,
            Client.id != own_id,
            Client.hostname.like(pattern, escape="\\"),
        )
    )
    return {name for name in rows if name is not None}

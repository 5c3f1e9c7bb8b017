"""Registration: a client row and its WireGuard peer, created together or not at all.

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

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from addresses import ENUMERATE_LIMIT, IPAddress, free_addresses, random_candidates
from command import CommandError
from config import Config, FleetConfig
from database import Client, Database
from errors import (
    Busy,
    FleetFull,
    FleetNotFound,
    KeyInOtherFleet,
    PoolExhausted,
    WgFleetError,
    WireGuardUnavailable,
)
from metrics import Metrics
from wireguard import WireGuard, generate_keypair, render_client_config

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 16
SAMPLE_ROUNDS = 8
INSERT_ATTEMPTS = 5
MAX_BATCH = 256  # registrations per transaction and per `wg addconf`

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


Outcome = tuple[Client, bool] | WgFleetError


@dataclass
class _Request:
    public_key: str
    source_ip: str
    outcome: asyncio.Future[tuple[Client, bool]]


def count_clients(session: Session, fleet: str) -> int:
    return session.scalar(select(func.count(Client.id)).where(Client.fleet == fleet)) or 0


def store_one(
    session: Session,
    fleet: str,
    settings: FleetConfig,
    request: _Request,
    now: datetime,
    room: int,
) -> tuple[Client, bool]:
    """Add the client's row, or refresh the row that has its key; flushed, not committed."""
    existing = session.scalar(select(Client).where(Client.public_key == request.public_key))
    if existing is not None:
        if existing.fleet != fleet:
            raise KeyInOtherFleet(
                f"This public key is already registered in fleet {existing.fleet!r}."
            )
        existing.last_seen = max(existing.last_seen, now)
        existing.last_active = max(existing.last_active, now)
        existing.source_ip = request.source_ip
        return existing, False
    if room <= 0:
        raise FleetFull(
            f"Fleet {fleet} has reached its limit of {settings.max_clients} clients "
            "(max_clients); try again once inactive clients are pruned."
        )
    row = Client(
        fleet=fleet,
        address=str(pick_address(session, fleet, settings)),
        public_key=request.public_key,
        source_ip=request.source_ip,
        registered_at=now,
        last_seen=now,
        last_active=now,
    )
    session.add(row)
    session.flush()
    return row, True


def store_batch(
    session: Session, fleet: str, settings: FleetConfig, batch: list[_Request], now: datetime
) -> list[Outcome]:
    """Store every request of `batch` in one transaction (a group commit).

    Should another writer sharing the database collide with it (a UNIQUE violation),
    the batch is redone one request at a time, each retried on collision.
    """
    try:
        room = settings.max_clients - count_clients(session, fleet)
        outcomes: list[Outcome] = []
        for request in batch:
            try:
                outcome = store_one(session, fleet, settings, request, now, room)
            except WgFleetError as error:
                outcomes.append(error)
                continue
            room -= outcome[1]
            outcomes.append(outcome)
        session.commit()
        return outcomes
    except IntegrityError:
        session.rollback()
    return [store_alone(session, fleet, settings, request, now) for request in batch]


def store_alone(
    session: Session, fleet: str, settings: FleetConfig, request: _Request, now: datetime
) -> Outcome:
    for _ in range(INSERT_ATTEMPTS):
        try:
            room = settings.max_clients - count_clients(session, fleet)
            outcome = store_one(session, fleet, settings, request, now, room)
            session.commit()
            return outcome
        except IntegrityError:
            session.rollback()  # another writer took the address or the key first
        except WgFleetError as error:
            session.rollback()
            return error
    return Busy("Registration kept colliding with other registrations; try again.")


def delete_rows(session: Session, ids: list[int]) -> None:
    session.execute(delete(Client).where(Client.id.in_(ids)))
    session.commit()


class Registry:
    """Registers clients into fleets; one instance per running app.

    Registrations that arrive together are stored in one transaction and added to the
    interface with one `wg addconf` (per fleet, in arrival order, at most `MAX_BATCH`
    at a time). Atomicity holds per batch: if `wg` fails, every row the batch created
    is deleted again and each of its requests gets 503.
    """

    def __init__(
        self,
        config: Config,
        database: Database,
        wireguard: WireGuard,
        server_keys: dict[str, str],
        clock: Clock,
        fleet_locks: dict[str, asyncio.Lock],
        metrics: Metrics,
    ) -> None:
        self._config = config
        self._database = database
        self._wireguard = wireguard
        self._server_keys = server_keys
        self._clock = clock
        self._locks = fleet_locks
        self._metrics = metrics
        self._queues: dict[str, list[_Request]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def fleet(self, name: str) -> FleetConfig:
        try:
            return self._config.fleets[name]
        except KeyError:
            raise FleetNotFound(name) from None

    async def register(
        self, fleet: str, public_key: str | None, source_ip: IPAddress
    ) -> Registration:
        """Register a client, with its own public key or a key pair made here.

        Raises `FleetNotFound`, `KeyInOtherFleet`, `PoolExhausted`, `FleetFull`, `Busy`
        or `WireGuardUnavailable`; after any of them nothing of this request remains.
        """
        settings = self.fleet(fleet)
        keys = generate_keypair() if public_key is None else None
        key = keys.public_key if keys is not None else str(public_key)
        request = _Request(key, str(source_ip), asyncio.get_running_loop().create_future())
        self._queues.setdefault(fleet, []).append(request)
        if fleet not in self._workers:
            self._workers[fleet] = asyncio.create_task(self._drain(fleet))
        row, created = await request.outcome
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

    async def _drain(self, fleet: str) -> None:
        queue = self._queues[fleet]
        try:
            while queue:
                batch = queue[:MAX_BATCH]
                del queue[:MAX_BATCH]
                try:
                    outcomes = await self._register_batch(fleet, batch)
                except Exception as error:
                    logger.exception("registration in fleet %s failed", fleet)
                    outcomes = [Busy("Registration failed; try again.")] * len(batch)
                    if isinstance(error, WgFleetError):
                        outcomes = [error] * len(batch)
                for request, outcome in zip(batch, outcomes, strict=True):
                    if request.outcome.done():
                        continue  # the caller went away
                    if isinstance(outcome, WgFleetError):
                        request.outcome.set_exception(outcome)
                    else:
                        request.outcome.set_result(outcome)
        finally:
            del self._workers[fleet]

    async def _register_batch(self, fleet: str, batch: list[_Request]) -> list[Outcome]:
        settings = self.fleet(fleet)
        now = self._clock()
        async with self._locks[fleet]:
            outcomes = await self._database.write(
                lambda session: store_batch(session, fleet, settings, batch, now)
            )
            peers = [
                (request.public_key, IPv6Address(outcome[0].address))
                for request, outcome in zip(batch, outcomes, strict=True)
                if not isinstance(outcome, WgFleetError)
            ]
            try:
                await self._wireguard.add_peers(fleet, peers)
            except CommandError as error:
                created = [o[0].id for o in outcomes if not isinstance(o, WgFleetError) and o[1]]
                if created:
                    await self._database.write(lambda session: delete_rows(session, created))
                logger.error("registration in fleet %s failed: %s", fleet, error)
                failure = WireGuardUnavailable(
                    "WireGuard could not add the peer; nothing was registered. Try again later."
                )
                return [o if isinstance(o, WgFleetError) else failure for o in outcomes]
        return outcomes

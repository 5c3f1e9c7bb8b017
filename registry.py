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

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from addresses import ENUMERATE_LIMIT, IPAddress, free_addresses, random_candidates
from command import CommandError
from config import Config, FleetConfig
from database import CLIENTS, Database, UTCDateTime, advanced
from errors import (
    Busy,
    FleetFull,
    FleetNotFound,
    KeyInOtherFleet,
    PoolExhausted,
    ServedElsewhere,
    WgFleetError,
    WireGuardUnavailable,
)
from hosts import Publisher
from metrics import Metrics
from roster import Roster
from tasks import report_failure
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


def pick_addresses(
    session: Session, fleet: str, settings: FleetConfig, count: int
) -> list[IPv6Address]:
    """`count` distinct addresses of the fleet's subnet that no client holds.

    A small subnet is enumerated, so its last free address is still found; a large one
    is sampled at random, checking all candidates in one query. Raises `PoolExhausted`
    when fewer than `count` are free.
    """
    subnet, server = settings.subnet, settings.ip6
    in_fleet = select(CLIENTS.c.address).where(CLIENTS.c.fleet == fleet)
    if subnet.num_addresses <= ENUMERATE_LIMIT:
        free = free_addresses(subnet, server, session.scalars(in_fleet))
        if len(free) >= count:
            return [free.pop(secrets.randbelow(len(free))) for _ in range(count)]
    else:
        for _ in range(SAMPLE_ROUNDS):
            candidates = random_candidates(subnet, server, 2 * count + SAMPLE_SIZE)
            wanted = [str(candidate) for candidate in candidates]
            taken = set(session.scalars(in_fleet.where(CLIENTS.c.address.in_(wanted))))
            free = [c for c, text in zip(candidates, wanted, strict=True) if text not in taken]
            if len(free) >= count:
                return free[:count]
    raise PoolExhausted(f"Fleet {fleet} has no free address left in {subnet}.")


Outcome = tuple[IPv6Address, bool] | WgFleetError


@dataclass
class _Request:
    public_key: str
    source_ip: str
    outcome: asyncio.Future[tuple[IPv6Address, bool]]


def count_clients(session: Session, fleet: str) -> int:
    return session.scalar(select(func.count()).where(CLIENTS.c.fleet == fleet)) or 0


def store_batch(
    session: Session, fleet: str, settings: FleetConfig, batch: list[_Request], now: datetime
) -> list[Outcome]:
    """Store every request of `batch` in one transaction (a group commit).

    A key already registered in this fleet keeps its address and has its activity and
    source IP refreshed; one registered in another fleet is refused. Set-based: a
    handful of statements per batch, not per client. Should another writer sharing the
    database collide with it (a UNIQUE violation), the batch is retried whole.
    """
    for _ in range(INSERT_ATTEMPTS):
        try:
            outcomes = _store_batch(session, fleet, settings, batch, now)
            session.commit()
            return outcomes
        except IntegrityError:
            session.rollback()  # another writer took an address or a key first
    return [Busy("Registration kept colliding with other registrations; try again.")] * len(batch)


def _store_batch(
    session: Session, fleet: str, settings: FleetConfig, batch: list[_Request], now: datetime
) -> list[Outcome]:
    keys = list({request.public_key: None for request in batch})
    known = {
        key: (key_fleet, address)
        for key, key_fleet, address in session.execute(
            select(CLIENTS.c.public_key, CLIENTS.c.fleet, CLIENTS.c.address).where(
                CLIENTS.c.public_key.in_(keys)
            )
        )
    }
    new_keys = [key for key in keys if key not in known]
    room = settings.max_clients - count_clients(session, fleet)
    admitted, refused = new_keys[: max(room, 0)], set(new_keys[max(room, 0) :])
    addresses = pick_addresses(session, fleet, settings, len(admitted)) if admitted else []
    source_of = {request.public_key: request.source_ip for request in batch}
    if admitted:
        session.execute(
            insert(CLIENTS),
            [
                {
                    "fleet": fleet,
                    "address": str(address),
                    "public_key": key,
                    "source_ip": source_of[key],
                    "registered_at": now,
                    "last_seen": now,
                    "last_active": now,
                }
                for key, address in zip(admitted, addresses, strict=True)
            ],
        )
    refreshed = [key for key in keys if key in known and known[key][0] == fleet]
    if refreshed:
        moment = bindparam("moment", type_=UTCDateTime())
        session.execute(
            update(CLIENTS)
            .where(CLIENTS.c.public_key == bindparam("key"))
            .values(
                source_ip=bindparam("source"),
                last_seen=advanced(CLIENTS.c.last_seen, moment),
                last_active=advanced(CLIENTS.c.last_active, moment),
            ),
            [{"key": key, "source": source_of[key], "moment": now} for key in refreshed],
        )
    created = dict(zip(admitted, addresses, strict=True))
    outcomes: list[Outcome] = []
    answered: set[str] = set()
    for request in batch:
        key = request.public_key
        first = key not in answered
        answered.add(key)
        if key in refused:
            outcomes.append(
                FleetFull(
                    f"Fleet {fleet} has reached its limit of {settings.max_clients} clients "
                    "(max_clients); try again once inactive clients are pruned."
                )
            )
        elif key in created:
            outcomes.append((created[key], first))  # a repeat in the batch is not new
        elif known[key][0] != fleet:
            outcomes.append(
                KeyInOtherFleet(
                    f"This public key is already registered in fleet {known[key][0]!r}."
                )
            )
        else:
            outcomes.append((IPv6Address(known[key][1]), False))
    return outcomes


def delete_keys(session: Session, keys: list[str]) -> None:
    session.execute(delete(CLIENTS).where(CLIENTS.c.public_key.in_(keys)))
    session.commit()


def local_fleet(config: Config, name: str) -> FleetConfig:
    """The settings of a fleet this node runs; `FleetNotFound` or `ServedElsewhere`."""
    if name not in config.fleets:
        raise FleetNotFound(name)
    if config.node_of(name) != config.node:
        raise ServedElsewhere(name, config.node_of(name))
    return config.fleets[name]


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
        publisher: Publisher,
        roster: Roster,
    ) -> None:
        self._publisher = publisher
        self._roster = roster
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
        """The settings of a fleet this node runs; `FleetNotFound` or `ServedElsewhere`."""
        return local_fleet(self._config, name)

    async def register(
        self, fleet: str, public_key: str | None, source_ip: IPAddress
    ) -> Registration:
        """Register a client, with its own public key or a key pair made here.

        Raises `FleetNotFound`, `KeyInOtherFleet`, `PoolExhausted`, `FleetFull`, `Busy`
        or `WireGuardUnavailable`; after any of them nothing of this request remains.
        """
        settings = self.fleet(fleet)
        if public_key is not None and public_key in self._server_keys.values():
            raise KeyInOtherFleet(
                "This public key is a wg-fleet server's own key; a client needs a key pair "
                "of its own."
            )
        keys = generate_keypair() if public_key is None else None
        key = keys.public_key if keys is not None else str(public_key)
        request = _Request(key, str(source_ip), asyncio.get_running_loop().create_future())
        self._queues.setdefault(fleet, []).append(request)
        if fleet not in self._workers:
            worker = asyncio.create_task(self._drain(fleet), name=f"wg-fleet-register-{fleet}")
            worker.add_done_callback(report_failure)
            self._workers[fleet] = worker
        address, created = await request.outcome
        self._metrics.registered(fleet)
        if created:
            logger.debug("registered %s in fleet %s from %s", address, fleet, source_ip)
        config = render_client_config(
            private_key=keys.private_key if keys else None,
            address=address,
            server_public_key=self._server_keys[fleet],
            fleet=settings,
        )
        return Registration(address, key, config, created)

    async def close(self) -> None:
        """Cancel the workers still draining a queue (at shutdown, after the server has
        stopped taking requests); a request still waiting gets `Busy`."""
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for queue in self._queues.values():
            for request in queue:
                if not request.outcome.done():
                    request.outcome.set_exception(Busy("The service is stopping; try again."))
            queue.clear()

    async def _drain(self, fleet: str) -> None:
        queue = self._queues[fleet]
        try:
            while queue:
                batch = queue[:MAX_BATCH]
                del queue[:MAX_BATCH]
                try:
                    outcomes = await self._register_batch(fleet, batch)
                except WgFleetError as error:
                    # Expected (the database down, say): one line, no traceback.
                    logger.warning("registration in fleet %s failed: %s", fleet, error)
                    outcomes = [error] * len(batch)
                except Exception:
                    logger.exception("registration in fleet %s failed", fleet)
                    outcomes = [Busy("Registration failed; try again.")] * len(batch)
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
                (request.public_key, outcome[0])
                for request, outcome in zip(batch, outcomes, strict=True)
                if not isinstance(outcome, WgFleetError)
            ]
            created = [
                (request.public_key, str(outcome[0]))
                for request, outcome in zip(batch, outcomes, strict=True)
                if not isinstance(outcome, WgFleetError) and outcome[1]
            ]
            try:
                await self._wireguard.add_peers(fleet, peers)
            except CommandError as error:
                if created:
                    keys = [key for key, _ in created]
                    await self._database.write(lambda session: delete_keys(session, keys))
                    # `wg addconf` may have applied some peers before it failed.
                    try:
                        await self._wireguard.remove_peers(fleet, keys)
                    except CommandError as cleanup:
                        logger.error("fleet %s: could not remove peers: %s", fleet, cleanup)
                logger.error("registration in fleet %s failed: %s", fleet, error)
                failure = WireGuardUnavailable(
                    "WireGuard could not add the peer; nothing was registered. Try again later."
                )
                return [o if isinstance(o, WgFleetError) else failure for o in outcomes]
        for key, address in created:
            self._roster.add(fleet, key, address)
        if created:
            logger.info("fleet %s: registered %d client(s)", fleet, len(created))
            self._publisher.refresh_soon()  # new clients are new Prometheus targets
        return outcomes

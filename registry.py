"""Registration: a client row and its WireGuard peer, created together or not at all.

Nobody hears of a registration before both its row is committed and its peer added;
when adding the peer fails the row is deleted again (and the peer removed) first. A key
made here goes to the interface while its row is being stored, any other key after its
row is committed. A crash in between leaves a row without a peer or a peer without a row,
both of which the next reconciliation pass repairs (the database is the truth); the
fleet's lock keeps a pass from seeing a batch half done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv6Address

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from addresses import ENUMERATE_LIMIT, IPAddress, free_addresses, ip6_text, random_candidates
from bans import banned_among, refusal
from command import CommandError
from config import Config, FleetConfig
from database import CLIENTS, Database
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
from events import Subject, forget_registered, record_many
from hosts import Publisher
from metrics import Metrics
from roster import Roster
from tasks import report_failure
from wireguard import WireGuard, client_interface, generate_keypair, server_peer

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 16
SAMPLE_ROUNDS = 8
INSERT_ATTEMPTS = 5
MAX_BATCH = 256  # registrations per transaction and per `wg addconf`
# Below this share of max_clients the roster's count is trusted; nearer the limit the
# database counts (a full count of a large fleet costs milliseconds).
ROSTER_COUNT_TRUSTED = 0.9

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Registration:
    address: IPv6Address
    public_key: str
    config: str = field(repr=False)  # may hold the client's private key
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
            wanted = [ip6_text(candidate) for candidate in candidates]
            taken = set(session.scalars(in_fleet.where(CLIENTS.c.address.in_(wanted))))
            free = [c for c, text in zip(candidates, wanted, strict=True) if text not in taken]
            if len(free) >= count:
                return free[:count]
    raise PoolExhausted(f"Fleet {fleet} has no free address left in {subnet}.")


Outcome = tuple[IPv6Address, bool] | WgFleetError


@dataclass(frozen=True)
class Hint:
    """What the roster says before a batch is stored: the fleet's size, and for each key
    an address no client in it holds. Only a hint: the database's UNIQUE constraints
    still decide, and a batch that collides is retried without it."""

    clients: int
    addresses: dict[str, IPv6Address]  # public key -> the address it gets if it is new

    def trusted(self, settings: FleetConfig, new: int) -> bool:
        """Whether the roster's count may stand in for the database's: far from the limit."""
        return self.clients + new <= ROSTER_COUNT_TRUSTED * settings.max_clients


def roster_hint(roster: Roster, fleet: str, settings: FleetConfig, keys: list[str]) -> Hint | None:
    """An address for each distinct key, and the roster's size; None for a small subnet
    (enumerated in the database instead) or an unloaded roster."""
    size = roster.size(fleet)
    distinct = list(dict.fromkeys(keys))
    if size is None or settings.subnet.num_addresses <= ENUMERATE_LIMIT:
        return None
    for _ in range(SAMPLE_ROUNDS):
        candidates = random_candidates(settings.subnet, settings.ip6, len(distinct) + SAMPLE_SIZE)
        free = [c for c in candidates if not roster.holds(fleet, ip6_text(c))]
        if len(free) >= len(distinct):
            return Hint(size, dict(zip(distinct, free, strict=False)))
    return None


def early_peers(batch: list[_Request], hint: Hint | None, settings: FleetConfig) -> list[Peer]:
    """Peers that may go to the interface while their rows are being stored: keys made
    here (so certainly new) with the addresses the hint gives them."""
    if hint is None or not hint.trusted(settings, len(batch)):
        return []
    made = dict.fromkeys(request.public_key for request in batch if request.generated)
    return [(key, hint.addresses[key]) for key in made]


@dataclass
class _Request:
    public_key: str
    source_ip: str
    outcome: asyncio.Future[tuple[IPv6Address, bool]]
    generated: bool = False  # the key pair was made here: the key is new for certain


Peer = tuple[str, IPv6Address]


def count_clients(session: Session, fleet: str) -> int:
    return session.scalar(select(func.count()).where(CLIENTS.c.fleet == fleet)) or 0


def store_batch(
    session: Session,
    fleet: str,
    settings: FleetConfig,
    batch: list[_Request],
    now: datetime,
    hint: Hint | None = None,
    node: str = "",
) -> list[Outcome]:
    """Store every request of `batch` in one transaction (a group commit).

    A key already registered in this fleet keeps its address and has its source IP
    (not its activity) refreshed; one registered in another fleet is refused. Set-based: a
    handful of statements per batch, not per client. With a `hint` the first attempt
    takes its addresses and count from it instead of querying for them. Should another
    writer sharing the database collide with it (a UNIQUE violation), the batch is
    retried whole, without the hint.
    """
    # A key made here is new for certain: neither banned nor registered anywhere.
    supplied = [request.public_key for request in batch if not request.generated]
    for attempt in range(INSERT_ATTEMPTS):
        try:
            banned = banned_among(session, supplied)
            allowed = [request for request in batch if request.public_key not in banned]
            first_hint = hint if attempt == 0 else None
            stored = iter(
                _store_batch(session, fleet, settings, allowed, now, first_hint) if allowed else []
            )
            outcomes = [
                refusal() if request.public_key in banned else next(stored) for request in batch
            ]
            record_registered(session, fleet, node, now, batch, outcomes)
            session.commit()
            return outcomes
        except IntegrityError:
            session.rollback()  # another writer took an address or a key first
    return [Busy("Registration kept colliding with other registrations; try again.")] * len(batch)


def _store_batch(
    session: Session,
    fleet: str,
    settings: FleetConfig,
    batch: list[_Request],
    now: datetime,
    hint: Hint | None,
) -> list[Outcome]:
    keys = list({request.public_key: None for request in batch})
    supplied = list({request.public_key: None for request in batch if not request.generated})
    known = {
        key: (key_fleet, address)
        for key, key_fleet, address in (
            session.execute(
                select(CLIENTS.c.public_key, CLIENTS.c.fleet, CLIENTS.c.address).where(
                    CLIENTS.c.public_key.in_(supplied)
                )
            )
            if supplied
            else ()
        )
    }
    new_keys = [key for key in keys if key not in known]
    if hint is not None and not hint.trusted(settings, len(new_keys)):
        hint = None  # near the limit: the database counts
    clients = hint.clients if hint is not None else count_clients(session, fleet)
    room = settings.max_clients - clients
    admitted, refused = new_keys[: max(room, 0)], set(new_keys[max(room, 0) :])
    if hint is not None:
        addresses = [hint.addresses[key] for key in admitted]
    else:
        addresses = pick_addresses(session, fleet, settings, len(admitted)) if admitted else []
    source_of = {request.public_key: request.source_ip for request in batch}
    if admitted:
        session.execute(
            insert(CLIENTS),
            [
                {
                    "fleet": fleet,
                    "address": ip6_text(address),
                    "public_key": key,
                    "source_ip": source_of[key],
                    "registered_at": now,
                    "last_seen": now,
                    "last_active": now,
                }
                for key, address in zip(admitted, addresses, strict=True)
            ],
        )
    # A known key's source IP is refreshed, but registering is not activity: anyone who
    # read a public key on the dashboard could otherwise keep a dead client alive.
    refreshed = [key for key in keys if key in known and known[key][0] == fleet]
    if refreshed:
        session.execute(
            update(CLIENTS)
            .where(CLIENTS.c.public_key == bindparam("key"))
            .values(source_ip=bindparam("source")),
            [{"key": key, "source": source_of[key]} for key in refreshed],
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


def record_registered(
    session: Session,
    fleet: str,
    node: str,
    now: datetime,
    batch: list[_Request],
    outcomes: list[Outcome],
) -> None:
    """A `registered` event for every client the batch created."""
    record_many(
        session,
        "registered",
        fleet=fleet,
        node=node,
        time=now,
        items=[
            (Subject(ip6_text(outcome[0]), request.public_key, None), None)
            for request, outcome in zip(batch, outcomes, strict=True)
            if not isinstance(outcome, WgFleetError) and outcome[1]
        ],
    )


def delete_keys(session: Session, keys: list[str]) -> None:
    """Undo registrations whose peers could not be added, their events included."""
    session.execute(delete(CLIENTS).where(CLIENTS.c.public_key.in_(keys)))
    forget_registered(session, keys)
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
        self._server_peers: dict[tuple[str, str], str] = {}  # (fleet, key) -> config part

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
        loop = asyncio.get_running_loop()
        request = _Request(key, str(source_ip), loop.create_future(), generated=keys is not None)
        self._queues.setdefault(fleet, []).append(request)
        if fleet not in self._workers:
            worker = asyncio.create_task(self._drain(fleet), name=f"wg-fleet-register-{fleet}")
            worker.add_done_callback(report_failure)
            self._workers[fleet] = worker
        address, created = await request.outcome
        self._metrics.registered(fleet)
        if created:
            logger.debug("registered %s in fleet %s from %s", address, fleet, source_ip)
        config = client_interface(keys.private_key if keys else None, address)
        return Registration(address, key, config + self._server_peer(fleet, settings), created)

    def _server_peer(self, fleet: str, settings: FleetConfig) -> str:
        """The fleet's part of every client config, rendered once per server key."""
        server_key = self._server_keys[fleet]
        part = self._server_peers.get((fleet, server_key))
        if part is None:
            part = self._server_peers[(fleet, server_key)] = server_peer(server_key, settings)
        return part

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
        """Store the batch and add its peers; keys made here go to the interface while
        their rows are being stored (the two take about as long), the others after."""
        settings = self.fleet(fleet)
        now = self._clock()
        async with self._locks[fleet]:
            hint = roster_hint(self._roster, fleet, settings, [r.public_key for r in batch])
            early = early_peers(batch, hint, settings)
            adding = asyncio.create_task(self._wireguard.add_peers(fleet, early)) if early else None
            try:
                outcomes = await self._database.write(
                    lambda session: store_batch(
                        session, fleet, settings, batch, now, hint, self._config.node_of(fleet)
                    )
                )
            except Exception:
                if adding is not None:
                    await self._remove_quietly(fleet, adding, [key for key, _ in early])
                raise
            stored = {
                request.public_key: outcome[0]
                for request, outcome in zip(batch, outcomes, strict=True)
                if not isinstance(outcome, WgFleetError)
            }
            created = [
                (request.public_key, ip6_text(outcome[0]))
                for request, outcome in zip(batch, outcomes, strict=True)
                if not isinstance(outcome, WgFleetError) and outcome[1]
            ]
            # Added early but stored otherwise (a retried batch, a refusal): removed, then
            # added again with the stored address where there is one.
            wrong = [key for key, address in early if stored.get(key) != address]
            done = {key for key, _ in early if key not in wrong}
            rest = [(key, address) for key, address in stored.items() if key not in done]
            try:
                if adding is not None:
                    await adding
                await self._wireguard.remove_peers(fleet, wrong)
                await self._wireguard.add_peers(fleet, rest)
            except CommandError as error:
                keys = list(dict.fromkeys([key for key, _ in created] + [k for k, _ in early]))
                if created:
                    await self._database.write(
                        lambda session: delete_keys(session, [key for key, _ in created])
                    )
                if keys:
                    # Adding may have applied some peers before it failed.
                    await self._remove_quietly(fleet, None, keys)
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

    async def _remove_quietly(
        self, fleet: str, adding: asyncio.Task[None] | None, keys: list[str]
    ) -> None:
        """Remove peers that must not stay, once `adding` (if any) is over; log failures."""
        if adding is not None:
            with contextlib.suppress(CommandError):
                await adding
        try:
            await self._wireguard.remove_peers(fleet, keys)
        except CommandError as error:
            logger.error("fleet %s: could not remove peers: %s", fleet, error)

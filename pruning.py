"""The periodic sweep: persist handshakes, prune inactive clients, repair drift.

One pass per fleet takes one `wg show dump`, reads the fleet's rows once, deletes the
inactive ones in one transaction and changes the interface with bulk `wg` calls. The
decision is the pure `find_inactive`, with the clock injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from ipaddress import IPv6Address

from sqlalchemy import bindparam, case, delete, select, update
from sqlalchemy.orm import Session

from activity import store_activity
from context import AppContext
from database import CLIENTS, Client, UTCDateTime
from reconcile import plan_peers
from wireguard import InterfaceDump, interface_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Activity:
    id: int
    public_key: str
    address: IPv6Address
    hostname: str | None
    last_seen: datetime
    last_handshake: datetime | None


@dataclass(frozen=True)
class SweepReport:
    fleet: str
    pruned: int
    restored: int
    removed_unknown: int
    brought_up: bool


def last_activity(client: Activity, started_at: datetime) -> datetime:
    """Latest of registration or ping (`last_seen`), handshake, and process start."""
    moments = [client.last_seen, started_at]
    if client.last_handshake is not None:
        moments.append(client.last_handshake)
    return max(moments)


def find_inactive(
    clients: Iterable[Activity], *, now: datetime, timeout: timedelta, started_at: datetime
) -> list[Activity]:
    """The clients whose last activity is older than `timeout` at `now`."""
    cutoff = now - timeout
    return [client for client in clients if last_activity(client, started_at) < cutoff]


def with_handshakes(clients: list[Activity], dump: InterfaceDump) -> list[Activity]:
    """`clients` with the newer handshakes the interface reports."""
    merged = []
    for client in clients:
        peer = dump.peers.get(client.public_key)
        seen = peer.latest_handshake if peer else None
        if seen is not None and (client.last_handshake is None or seen > client.last_handshake):
            client = replace(client, last_handshake=seen)
        merged.append(client)
    return merged


def select_activity(session: Session, fleet: str) -> list[Activity]:
    rows = session.execute(
        select(
            Client.id,
            Client.public_key,
            Client.address,
            Client.hostname,
            Client.last_seen,
            Client.last_handshake,
        ).where(Client.fleet == fleet)
    )
    return [
        Activity(row_id, key, IPv6Address(address), hostname, seen, handshake)
        for row_id, key, address, hostname, seen, handshake in rows
    ]


def store_sweep(
    session: Session,
    handshakes: list[Activity],
    inactive: list[Activity],
    cutoff: datetime,
    pending: dict[int, datetime] | None = None,
) -> set[int]:
    """Store buffered ping times and new handshakes, then delete the inactive rows;
    return the ids deleted.

    A row is deleted only if it is still inactive now: a ping stored since the rows
    were read wins over the prune.
    """
    store_activity(session, pending or {})
    if handshakes:
        handshake = bindparam("new_handshake", type_=UTCDateTime())
        session.execute(
            update(CLIENTS)
            .where(CLIENTS.c.id == bindparam("row_id"))
            .values(
                last_handshake=handshake,
                last_active=case(
                    (CLIENTS.c.last_active < handshake, handshake), else_=CLIENTS.c.last_active
                ),
            )
            .execution_options(synchronize_session=False),
            [{"row_id": c.id, "new_handshake": c.last_handshake} for c in handshakes],
        )
    deleted: set[int] = set()
    if inactive:
        ids = [client.id for client in inactive]
        still = set(
            session.scalars(
                select(Client.id).where(Client.id.in_(ids), Client.last_active < cutoff)
            )
        )
        if still:
            session.execute(delete(Client).where(Client.id.in_(still)))
        deleted = still
    session.commit()
    return deleted


async def sweep_fleet(context: AppContext, fleet: str, *, at_startup: bool = False) -> SweepReport:
    """One pass over one fleet; holds the fleet's lock so no registration interleaves."""
    interface = interface_name(fleet)
    now = context.clock()
    cutoff = now - context.config.prune_timeout
    async with context.fleet_locks[fleet]:
        with context.activity.committing_directly(fleet):
            brought_up = False
            if not await context.wireguard.is_up(fleet):
                await context.wireguard.bring_up(fleet)
                brought_up = True
                log = logger.info if at_startup else logger.warning
                log("%s was down; brought it up", interface)
            # Dump before reading the rows: every peer in the dump then has its row
            # committed already, so no peer being registered can be taken for a stray.
            dump = await context.wireguard.dump(fleet)
            context.status.store(fleet, dump)
            clients = await context.database.read(lambda session: select_activity(session, fleet))
            merged = with_handshakes(clients, dump)
            changed = [new for old, new in zip(clients, merged, strict=True) if new is not old]
            inactive = find_inactive(
                merged,
                now=now,
                timeout=context.config.prune_timeout,
                started_at=context.started_at,
            )
            # Buffered ping times are stored first, in the same transaction, so that
            # the guard in store_sweep sees them.
            pending = context.activity.take()
            try:
                deleted = await context.database.write(
                    lambda session: store_sweep(session, changed, inactive, cutoff, pending)
                )
            except BaseException:
                context.activity.restore(pending)
                raise
            wanted = {c.public_key: c.address for c in merged if c.id not in deleted}
            plan = plan_peers(wanted, dump)
            await context.wireguard.remove_peers(fleet, plan.remove)
            await context.wireguard.add_peers(fleet, plan.add)
    pruned = [client for client in inactive if client.id in deleted]
    context.metrics.pruned_clients(fleet, len(pruned))
    if pruned:
        logger.info(
            "fleet %s: pruned %d inactive client(s): %s",
            fleet,
            len(pruned),
            ", ".join(str(c.address) for c in pruned[:10]) + (" …" if len(pruned) > 10 else ""),
        )
    pruned_keys = {client.public_key for client in pruned}
    unknown = [key for key in plan.remove if key not in wanted and key not in pruned_keys]
    if plan.add or unknown:
        logger.info(
            "%s: restored %d peer(s) from the database, removed %d peer(s) it does not know",
            interface,
            len(plan.add),
            len(unknown),
        )
    return SweepReport(fleet, len(pruned), len(plan.add), len(unknown), brought_up)


async def sweep_all(context: AppContext, *, at_startup: bool = False) -> list[SweepReport]:
    """Sweep every fleet, then rewrite the hosts file once.

    One fleet failing (its `wg` hanging, say) does not keep the others from being swept
    or the hosts file from following what was pruned; the failure is logged. At
    start-up a failure is raised instead, since the service cannot run without it.
    """
    reports = []
    started = time.monotonic()
    for fleet in context.config.local_fleets:
        try:
            reports.append(await sweep_fleet(context, fleet, at_startup=at_startup))
        except Exception as error:
            if at_startup:
                raise
            logger.error("the pass over fleet %s failed: %s", fleet, error, exc_info=True)
    await context.publisher.refresh()
    context.metrics.prune_duration.observe(time.monotonic() - started)
    return reports


class Pruner:
    """The background task that sweeps every `prune_interval`; one bad pass never ends it."""

    def __init__(self, context: AppContext) -> None:
        self._context = context
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wg-fleet-pruner")

    def wake(self) -> None:
        """Run a pass now instead of at the next interval (e.g. on SIGHUP)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        interval = self._context.config.prune_interval.total_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            try:
                await sweep_all(self._context)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("a pruning pass failed; the next one runs in %g s", interval)

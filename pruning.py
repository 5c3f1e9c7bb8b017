"""The periodic sweep: persist handshakes, prune inactive clients, repair drift.

One pass per fleet takes one `wg show dump` and reads the fleet's keys and addresses
once (strings only); the inactive rows are found through the `last_active` index and
deleted in the same transaction that stores new handshakes; the interface is changed
with bulk `wg` calls. The decisions are the pure `prune_cutoff` and `newer_handshakes`,
with the clock injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from activity import store_activity
from command import CommandError
from context import AppContext
from database import CLIENTS, UTCDateTime, advanced
from drift import note_repair, repair_link, repair_settings
from errors import DatabaseUnavailable
from events import delete_expired
from lifetimes import Lifetime, Pruned, fleet_lifetime, select_doomed, store_presence
from reconcile import Difference, PeerPlan, plan_peers
from roster import Entries, Row, entries_of
from status import is_online
from tasks import report_failure
from wireguard import InterfaceDump, interface_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    fleet: str
    pruned: int
    restored: int
    removed_unknown: int
    brought_up: bool
    fixed: int = 0


def prune_cutoff(now: datetime, timeout: timedelta, started_at: datetime) -> datetime | None:
    """Clients last active before the returned moment are pruned; None while the
    service itself is younger than `timeout` (nobody could reach it while it was down,
    so its start counts as everyone's activity)."""
    cutoff = now - timeout
    return None if started_at >= cutoff else cutoff


def newer_handshakes(
    dump: InterfaceDump, stored: Mapping[str, int], keys: Mapping[str, str]
) -> dict[str, int]:
    """Key -> epoch of every handshake of a known client newer than the one stored."""
    return {
        key: peer.handshake_epoch
        for key, peer in dump.peers.items()
        if peer.handshake_epoch > stored.get(key, 0) and key in keys
    }


def compare(
    dump: InterfaceDump,
    members: Sequence[Row],
    known: dict[str, int],
    stored: Mapping[str, int],
    now: datetime,
) -> tuple[dict[str, str], dict[str, int], set[str]]:
    """The pass's first look (run in a thread): the fleet's clients (key -> address),
    their handshakes newer than those stored, and which of them are online."""
    known.update(stored)
    wanted = {key: address for key, address, *_ in members}
    handshakes = newer_handshakes(dump, known, wanted)
    online = {
        key
        for key, peer in dump.peers.items()
        if key in wanted and is_online(peer.latest_handshake, now)
    }
    return wanted, handshakes, online


def settle(
    members: Sequence[Row],
    wanted: dict[str, str],
    known: dict[str, int],
    handshakes: Mapping[str, int],
    pruned: Sequence[Pruned],
    dump: InterfaceDump,
) -> tuple[Entries, PeerPlan]:
    """After the pass's write (run in a thread): forget the pruned, and make the
    roster's new entries and the plan that brings the interface to the database."""
    known.update(handshakes)
    for client in pruned:
        wanted.pop(client.public_key, None)
        known.pop(client.public_key, None)
    return entries_of(m for m in members if m[0] in wanted), plan_peers(wanted, dump)


def select_members(
    session: Session, fleet: str, with_handshakes: bool
) -> tuple[list[tuple[str, str, str | None, str | None, dict[str, str] | None]], dict[str, int]]:
    """The fleet's (key, address, hostname, requested hostname, labels) rows and, when
    asked, the handshakes stored for them (key -> epoch)."""
    rows = session.execute(
        select(
            CLIENTS.c.public_key,
            CLIENTS.c.address,
            CLIENTS.c.hostname,
            CLIENTS.c.requested_hostname,
            CLIENTS.c.labels,
        ).where(CLIENTS.c.fleet == fleet)
    ).all()
    stored: dict[str, int] = {}
    if with_handshakes:
        query = select(CLIENTS.c.public_key, CLIENTS.c.last_handshake).where(
            CLIENTS.c.fleet == fleet, CLIENTS.c.last_handshake.is_not(None)
        )
        stored = {key: int(moment.timestamp()) for key, moment in session.execute(query)}
    return [
        (key, address, name, requested, labels) for key, address, name, requested, labels in rows
    ], stored


def store_sweep(
    session: Session,
    fleet: str,
    handshakes: Mapping[str, int],
    cutoff: datetime | None,
    pending: dict[tuple[str, str], datetime] | None = None,
    lifetime: Lifetime | None = None,
) -> list[Pruned]:
    """Store buffered ping times and new handshakes, then delete the fleet's rows last
    active before `cutoff` (and those `lifetime` dooms: never connected, or the fleet
    expired); return what was deleted. With a `lifetime`, the deletions and the online
    transitions it observes are also recorded as events.

    All in one transaction, in this order, so a ping or handshake stored since the pass
    began always saves its client.
    """
    store_activity(session, pending or {})
    if handshakes:
        moment = bindparam("moment", type_=UTCDateTime())
        session.execute(
            update(CLIENTS)
            .where(CLIENTS.c.public_key == bindparam("key"))
            .values(
                last_handshake=moment,
                last_active=advanced(CLIENTS.c.last_active, moment),
            ),
            [
                {"key": key, "moment": datetime.fromtimestamp(epoch, UTC)}
                for key, epoch in handshakes.items()
            ],
        )
    pruned: list[Pruned] = []
    if lifetime is not None:
        pruned = select_doomed(session, fleet, cutoff, lifetime)
    elif cutoff is not None:
        inactive = session.execute(
            select(CLIENTS.c.public_key, CLIENTS.c.address, CLIENTS.c.hostname).where(
                CLIENTS.c.fleet == fleet, CLIENTS.c.last_active < cutoff
            )
        ).all()
        pruned = [Pruned(row.public_key, row.address, row.hostname) for row in inactive]
    if pruned:
        keys = [client.public_key for client in pruned]
        for start in range(0, len(keys), 500):
            session.execute(
                delete(CLIENTS).where(CLIENTS.c.public_key.in_(keys[start : start + 500]))
            )
    if lifetime is not None:
        store_presence(session, fleet, lifetime, pruned)
    session.commit()
    return pruned


def failure_kind(error: Exception) -> str:
    """What failed, in a few words fit for the open `/health` (the log has the rest)."""
    if isinstance(error, DatabaseUnavailable):
        return "the database did not answer"
    if isinstance(error, CommandError):
        return f"`{error.command}` failed"
    if isinstance(error, ValueError):
        return "`wg` printed something unexpected"
    return type(error).__name__


async def sweep_fleet(context: AppContext, fleet: str, *, at_startup: bool = False) -> SweepReport:
    """One pass over one fleet, one at a time; it holds the fleet's lock while it reads
    the interface and the rows and while it changes peers (see `_sweep_fleet`).

    A failure (a `wg` that fails, a database that does not answer) is remembered for
    `/health` until a pass over the fleet succeeds again, and raised.
    """
    try:
        async with context.pass_locks[fleet]:
            report = await _sweep_fleet(context, fleet, at_startup=at_startup)
    except Exception as error:
        context.failed_passes[fleet] = (
            f"the last pass over fleet {fleet} failed ({failure_kind(error)}); see the log"
        )
        raise
    context.failed_passes.pop(fleet, None)
    return report


async def _sweep_fleet(context: AppContext, fleet: str, *, at_startup: bool) -> SweepReport:
    interface = interface_name(fleet)
    roster = context.roster
    lock = context.fleet_locks[fleet]
    # The fleet's lock is held only while the link is checked and while peers and the
    # interface's settings are changed: never while tens of thousands of peers and rows
    # are read, compared and stored, which would hold up every registration for most of
    # a second. What clients do meanwhile (register, rename, leave) is journaled by the
    # roster and respected below; a batch still in flight while the interface is read
    # holds the lock, so it has finished, and is in the journal, before peers change.
    try:
        async with lock:
            repair = await repair_link(context, fleet, at_startup=at_startup)
            roster.watch(fleet)  # from here on, what clients do is journaled
        dump = await context.wireguard.dump(fleet)
        async with lock:
            dump = await repair_settings(context, fleet, repair.link, dump)
        context.status.store(fleet, dump)
        first = not roster.handshakes_known(fleet)
        # Read before pings switch to committing directly: while the database is down
        # the pass fails here, and pings of known clients are still answered from memory.
        members, stored = await context.database.read(
            lambda session: select_members(session, fleet, with_handshakes=first)
        )
        known = roster.stored_handshakes(fleet)
        now = context.clock()
        cutoff = prune_cutoff(now, context.config.prune_timeout_of(fleet), context.started_at)
        # Tens of thousands of rows and peers: compared in a thread, so pings and
        # registrations waiting on the loop are not held up for a tenth of a second.
        wanted, handshakes, online = await asyncio.to_thread(
            compare, dump, members, known, stored, now
        )
        lifetime = fleet_lifetime(context.config, fleet, now, context.started_at, online)
        with context.activity.committing_directly(fleet):
            # Buffered ping times are stored first, in the same transaction, so that
            # the prune sees them; pings arriving meanwhile are committed directly.
            pending = context.activity.take()
            try:
                pruned = await context.database.write(
                    lambda session: store_sweep(
                        session, fleet, handshakes, cutoff, pending, lifetime
                    )
                )
            except BaseException:
                context.activity.restore(pending)
                raise
        if pruned:
            context.publisher.changed()  # even if `wg` fails below
        entries, plan = await asyncio.to_thread(
            settle, members, wanted, known, handshakes, pruned, dump
        )
        async with lock:
            changes = roster.install(fleet, entries)
            # Registered meanwhile: not a stray. Removed meanwhile: not to be restored.
            plan = PeerPlan(
                tuple(key for key in plan.remove if key not in changes.added),
                tuple(peer for peer in plan.add if peer[0] not in changes.removed),
                plan.fix,
            )
            await context.wireguard.remove_peers(fleet, plan.remove)
            await context.wireguard.add_peers(fleet, plan.add)
            await context.wireguard.set_allowed_ips(fleet, plan.fix)
    finally:
        roster.unwatch(fleet)
    context.metrics.pruned_clients(fleet, len(pruned))
    if pruned:
        logger.info(
            "fleet %s: pruned %d %s client(s): %s",
            fleet,
            len(pruned),
            "/".join(sorted({c.reason for c in pruned})),
            ", ".join(c.address for c in pruned[:10]) + (" …" if len(pruned) > 10 else ""),
        )
    pruned_keys = {client.public_key for client in pruned}
    unknown = [key for key in plan.remove if key not in pruned_keys]
    if repair.created and at_startup:
        # A fresh interface after a reboot: restoring every peer is the normal start.
        if plan.add:
            logger.info("%s: restored %d peer(s) from the database", interface, len(plan.add))
    elif plan.add:
        note_repair(
            context,
            fleet,
            Difference("peers", f"{interface} lacked {len(plan.add)} peer(s) of the database"),
            "added them back",
        )
    if unknown:
        note_repair(
            context,
            fleet,
            Difference(
                "peers", f"{interface} held {len(unknown)} peer(s) the database does not know"
            ),
            "removed them",
        )
    if plan.fix:
        note_repair(
            context,
            fleet,
            Difference(
                "allowed-ips", f"{interface}: {len(plan.fix)} peer(s) had wrong allowed IPs"
            ),
            "set them back to the client's address",
        )
    return SweepReport(
        fleet, len(pruned), len(plan.add), len(unknown), repair.brought_up, len(plan.fix)
    )


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
            if isinstance(error, DatabaseUnavailable):
                # Expected while the database is down: a sentence, not a traceback.
                logger.error("the pass over fleet %s failed: %s (%s)", fleet, error, error.cause)
            else:
                logger.error("the pass over fleet %s failed: %s", fleet, error, exc_info=True)
    # Other nodes' fleets change without telling us: their names are re-read every pass.
    if context.publisher.is_changed() or set(context.config.fleets) != set(
        context.config.local_fleets
    ):
        try:
            await context.publisher.refresh()
        except DatabaseUnavailable as error:
            if at_startup:
                raise
            # Still changed: the next pass publishes once the database answers.
            logger.error("cannot publish the hosts file: %s (%s)", error, error.cause)
    context.metrics.prune_duration.observe(time.monotonic() - started)
    try:
        await context.database.write(
            lambda session: delete_expired(session, context.clock(), context.config.event_retention)
        )
    except Exception as error:
        if at_startup:
            raise
        logger.error("old events could not be deleted: %s", error)
    return reports


class Pruner:
    """The background task that sweeps every `prune_interval`; one bad pass never ends it."""

    def __init__(self, context: AppContext) -> None:
        self._context = context
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wg-fleet-pruner")
        self._task.add_done_callback(report_failure)

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

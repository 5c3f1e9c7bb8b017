"""Live WireGuard status for pages and metrics: at most one `wg show dump` per fleet per
few seconds, shared by every caller, never one call per client."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from command import CommandError
from tasks import report_failure
from wireguard import InterfaceDump, WireGuard

logger = logging.getLogger(__name__)

ONLINE_WINDOW = timedelta(minutes=3)
DEFAULT_TTL = 5.0


def is_online(last_handshake: datetime | None, now: datetime) -> bool:
    """A client is online when its last WireGuard handshake is under 3 minutes old."""
    return last_handshake is not None and now - last_handshake < ONLINE_WINDOW


def count_online(dump: InterfaceDump | None, now: datetime) -> int:
    if dump is None:
        return 0
    return sum(1 for peer in dump.peers.values() if is_online(peer.latest_handshake, now))


@dataclass
class _Entry:
    dump: InterfaceDump | None
    taken_at: float
    # Sorted, so that counting the online peers is a bisection, not a pass over them all.
    handshakes: list[int] = field(default_factory=list)


def _entry(dump: InterfaceDump | None) -> _Entry:
    peers = dump.peers.values() if dump else ()
    epochs = sorted(peer.handshake_epoch for peer in peers if peer.handshake_epoch > 0)
    return _Entry(dump, time.monotonic(), epochs)


class StatusCache:
    """Caches each fleet's dump for `ttl` seconds; concurrent callers share one `wg` call.

    A fleet whose dump fails is reported as `None` (unknown) until the next try.
    """

    def __init__(self, wireguard: WireGuard, ttl: float = DEFAULT_TTL) -> None:
        self._wireguard = wireguard
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[InterfaceDump | None]] = set()

    def store(self, fleet: str, dump: InterfaceDump) -> None:
        """Keep a dump taken elsewhere (the pruning pass), saving a `wg` call."""
        self._entries[fleet] = _entry(dump)

    def cached(self, fleet: str) -> InterfaceDump | None:
        """The fleet's latest dump, however old, without reading a new one."""
        entry = self._entries.get(fleet)
        return entry.dump if entry is not None else None

    async def dump(self, fleet: str) -> InterfaceDump | None:
        """The fleet's latest dump. An expired one is still answered at once while a
        fresh one is read in the background (a dump of 50,000 peers takes a while);
        only the very first call waits."""
        entry = self._entries.get(fleet)
        if entry is None:
            return await self._refresh(fleet)
        lock = self._locks.setdefault(fleet, asyncio.Lock())
        if time.monotonic() - entry.taken_at >= self._ttl and not lock.locked():
            task = asyncio.create_task(self._refresh(fleet), name=f"wg-fleet-status-{fleet}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(report_failure)
        return entry.dump

    async def online(self, fleet: str, now: datetime) -> int:
        """How many of the fleet's peers had a handshake under 3 minutes before `now`."""
        await self.dump(fleet)
        entry = self._entries[fleet]
        cutoff = (now - ONLINE_WINDOW).timestamp()
        return len(entry.handshakes) - bisect.bisect_right(entry.handshakes, cutoff)

    async def close(self) -> None:
        """Cancel background refreshes still under way (at shutdown)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _refresh(self, fleet: str) -> InterfaceDump | None:
        lock = self._locks.setdefault(fleet, asyncio.Lock())
        async with lock:
            entry = self._entries.get(fleet)
            if entry is not None and time.monotonic() - entry.taken_at < self._ttl:
                return entry.dump
            try:
                dump: InterfaceDump | None = await self._wireguard.dump(fleet)
            except (CommandError, ValueError) as error:
                logger.warning("cannot read the status of fleet %s: %s", fleet, error)
                dump = None
            self._entries[fleet] = _entry(dump)
            return dump

"""Each fleet's interface as `ip` sees it, for /health: at most one `ip` call per fleet
per second however often /health is asked, and concurrent askers share one call.

Only a link found up is remembered (for `ttl` seconds): one found down or missing is
read again at the next request (still one call at a time), so /health turns green as
soon as a pass has repaired the interface. `ip` itself failing raises, uncached.
"""

from __future__ import annotations

import asyncio
import time

from wireguard import LinkState, WireGuard

DEFAULT_TTL = 1.0


class LinkStates:
    def __init__(self, wireguard: WireGuard, ttl: float = DEFAULT_TTL) -> None:
        self._wireguard = wireguard
        self._ttl = ttl
        self._seen: dict[str, tuple[float, LinkState]] = {}
        self._reads: dict[str, asyncio.Task[LinkState | None]] = {}

    async def link(self, fleet: str) -> LinkState | None:
        """The fleet's interface (None when it does not exist)."""
        seen = self._seen.get(fleet)
        if seen is not None and time.monotonic() - seen[0] < self._ttl:
            return seen[1]
        read = self._reads.get(fleet)
        if read is None:
            read = asyncio.ensure_future(self._read(fleet))
            self._reads[fleet] = read
            read.add_done_callback(lambda _: self._reads.pop(fleet, None))
        return await asyncio.shield(read)

    async def _read(self, fleet: str) -> LinkState | None:
        self._seen.pop(fleet, None)
        link = await self._wireguard.link(fleet)
        if link is not None and link.up:
            self._seen[fleet] = (time.monotonic(), link)
        return link

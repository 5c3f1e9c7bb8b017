"""Whether each fleet's interface is up, for /health: at most one `ip` call per fleet
per second however often /health is asked, and concurrent askers share one call.

Only "up" is remembered (for `ttl` seconds): an interface found down is checked again
at the next request (still one call at a time), so /health turns green as soon as a
pass has brought the interface back.
"""

from __future__ import annotations

import asyncio
import time

from wireguard import WireGuard

DEFAULT_TTL = 1.0


class LinkStates:
    def __init__(self, wireguard: WireGuard, ttl: float = DEFAULT_TTL) -> None:
        self._wireguard = wireguard
        self._ttl = ttl
        self._up_at: dict[str, float] = {}
        self._checks: dict[str, asyncio.Task[bool]] = {}

    async def is_up(self, fleet: str) -> bool:
        """Whether the fleet's interface is up; `ip` failing counts as down."""
        seen = self._up_at.get(fleet)
        if seen is not None and time.monotonic() - seen < self._ttl:
            return True
        check = self._checks.get(fleet)
        if check is None:
            check = asyncio.ensure_future(self._check(fleet))
            self._checks[fleet] = check
            check.add_done_callback(lambda _: self._checks.pop(fleet, None))
        return await asyncio.shield(check)

    async def _check(self, fleet: str) -> bool:
        try:
            up = await self._wireguard.is_up(fleet)
        except Exception:  # noqa: BLE001 - `ip` itself failing counts as down
            up = False
        if up:
            self._up_at[fleet] = time.monotonic()
        else:
            self._up_at.pop(fleet, None)
        return up

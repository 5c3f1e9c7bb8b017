"""Write-behind for pings that only say "still alive".

Such a ping needs no commit of its own: its time is kept here and written, together
with every other ping of the same second, in one transaction. A crash loses at most
that second of `last_seen` — never a registration or a hostname, which are committed
before they are answered. While a fleet is being swept, its pings bypass the buffer
(`direct`) so that a ping committed before the sweep's delete always saves its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from database import CLIENTS, Database, UTCDateTime, advanced
from errors import DatabaseUnavailable
from tasks import report_failure

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0


def store_activity(session: Session, pending: dict[tuple[str, str], datetime]) -> None:
    """Advance `last_seen` and `last_active` of the clients at the given (fleet, address);
    never move them back."""
    if not pending:
        return
    moment = bindparam("moment", type_=UTCDateTime())
    session.execute(
        update(CLIENTS)
        .where(CLIENTS.c.fleet == bindparam("in_fleet"), CLIENTS.c.address == bindparam("at"))
        .values(
            last_seen=advanced(CLIENTS.c.last_seen, moment),
            last_active=advanced(CLIENTS.c.last_active, moment),
        )
        .execution_options(synchronize_session=False),
        [
            {"in_fleet": fleet, "at": address, "moment": moment_}
            for (fleet, address), moment_ in pending.items()
        ],
    )


class ActivityBuffer:
    def __init__(self, database: Database, interval: float = FLUSH_INTERVAL) -> None:
        self._database = database
        self._interval = interval
        self._pending: dict[tuple[str, str], datetime] = {}
        self._direct: set[str] = set()
        self._sweeps: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def mark(self, fleet: str) -> int | None:
        """A token for `still_quiet`, or None when pings of `fleet` must commit directly."""
        return None if fleet in self._direct else self._sweeps.get(fleet, 0)

    def still_quiet(self, fleet: str, mark: int) -> bool:
        """Whether no sweep of `fleet` has begun since `mark` was taken."""
        return fleet not in self._direct and self._sweeps.get(fleet, 0) == mark

    @contextlib.contextmanager
    def committing_directly(self, fleet: str) -> Iterator[None]:
        """For the duration of a sweep: pings of `fleet` are committed, not buffered."""
        self._direct.add(fleet)
        self._sweeps[fleet] = self._sweeps.get(fleet, 0) + 1
        try:
            yield
        finally:
            self._direct.discard(fleet)

    def note(self, fleet: str, address: str, moment: datetime) -> None:
        current = self._pending.get((fleet, address))
        if current is None or moment > current:
            self._pending[(fleet, address)] = moment

    def restore(self, pending: dict[tuple[str, str], datetime]) -> None:
        """Put back what `take` returned when storing it failed."""
        for (fleet, address), moment in pending.items():
            self.note(fleet, address, moment)

    def take(self) -> dict[tuple[str, str], datetime]:
        """Everything noted so far, for a writer job to store (see `store_activity`)."""
        pending, self._pending = self._pending, {}
        return pending

    async def flush(self) -> None:
        pending = self.take()
        if not pending:
            return
        try:
            await self._database.write(lambda session: _store_and_commit(session, pending))
        except BaseException:
            self.restore(pending)
            raise

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wg-fleet-activity")
        self._task.add_done_callback(report_failure)

    async def stop(self) -> None:
        """Stop the timer and write what is still pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except DatabaseUnavailable as error:
                # Expected while the database is down: said once, retried every second.
                if not failing:
                    logger.warning(
                        "cannot store ping times (%s); they are kept and retried", error.cause
                    )
                failing = True
                continue
            except Exception:
                logger.exception("could not store ping times; they are kept for the next try")
                continue
            if failing:
                logger.info("ping times are stored again")
                failing = False


def _store_and_commit(session: Session, pending: dict[tuple[str, str], datetime]) -> None:
    store_activity(session, pending)
    session.commit()

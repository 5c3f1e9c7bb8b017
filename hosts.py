"""Files that other programs read about the clients: the hosts file
(`<address> <name> …` per named client, the names from the templates in names.py —
by default `<hostname>.<fleet>.<domain>` — for a DNS server) and the Prometheus file_sd
targets file (every client, labelled)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from database import Client, Database
from files import write_if_changed
from names import Entry, Naming, assign_names, compile_rules
from tasks import report_failure

logger = logging.getLogger(__name__)

PUBLISHED_MODE = 0o644


def fqdn(hostname: str, fleet: str, domain: str) -> str:
    return f"{hostname}.{fleet}.{domain}"


def address_order(address: str) -> bytes:
    """A sort key putting IPv6 addresses in numeric order (cheaper than IPv6Address)."""
    return socket.inet_pton(socket.AF_INET6, address)


def render_hosts(entries: Iterable[tuple[str, str, str | None]], domain: str) -> str:
    """Hosts-file text for (fleet, address, hostname) entries, sorted by address then name.

    Addresses are written as stored, which is their canonical (compressed) form."""
    lines = sorted(
        (address_order(address), address, fqdn(hostname, fleet, domain))
        for fleet, address, hostname, *_ in entries
        if hostname
    )
    return "".join(f"{address} {name}\n" for _, address, name in lines)


def render_named_hosts(naming: Naming) -> str:
    """Hosts-file text: `<address> <name> <name> …` per client with a name, by address."""
    lines = sorted(
        (address_order(address), address, names) for (_, address), names in naming.names.items()
    )
    return "".join(f"{address} {' '.join(names)}\n" for _, address, names in lines)


def render_targets(
    entries: Iterable[tuple[str, str, str | None] | Entry],
    port: int,
    node_of: Callable[[str], str] | None = None,
) -> str:
    """Prometheus file_sd JSON: one target `[address]:port` per client, labelled with its
    fleet, (when named) hostname, (given `node_of`) node and every client label, sorted
    by address."""
    groups = []
    for entry in sorted(entries, key=lambda e: address_order(e[1])):
        fleet, address, hostname = entry[:3]
        labels = {"fleet": fleet} | ({"hostname": hostname} if hostname else {})
        if node_of is not None:
            labels["node"] = node_of(fleet)
        if isinstance(entry, Entry) and entry.labels:
            labels |= dict(sorted(entry.labels.items()))
        groups.append({"targets": [f"[{address}]:{port}"], "labels": labels})
    return json.dumps(groups, indent=1) + "\n"


def select_clients(session: Session, fleets: Iterable[str], named_only: bool) -> list[Entry]:
    """The fleets' clients in registration order (which decides who keeps a contested
    name)."""
    query = (
        select(Client.fleet, Client.address, Client.hostname, Client.labels, Client.registered_at)
        .where(Client.fleet.in_(list(fleets)))
        .order_by(Client.registered_at, Client.id)
    )
    if named_only:
        query = query.where(Client.hostname.is_not(None))
    return [Entry(*row) for row in session.execute(query)]


class Publisher:
    """Writes the hosts file and, when configured, the Prometheus targets file.

    Both are rewritten from the database, atomically and only when their content
    changed. Concurrent refreshes coalesce: a call made while a write is under way
    causes one more write after it, never one per call, and returns at once. A write
    that fails is remembered (`failures`, `/health`, `on_write`) and retried at every
    pass until it succeeds. `refresh_soon` is served by a task that `start` creates and
    `stop` ends (the lifespan calls both).
    """

    def __init__(
        self,
        path: Path,
        database: Database,
        fleets: Iterable[str],
        domain: str,
        targets: Path | None = None,
        target_port: int = 9100,
        names: Mapping[str, Sequence[str]] | None = None,
        node_of: Callable[[str], str] | None = None,
        on_write: Callable[[str, bool], None] | None = None,
        soon: float = 1.0,
    ) -> None:
        self.path = path
        self._database = database
        self._fleets = list(fleets)
        self._domain = domain
        self._targets = targets
        self._target_port = target_port
        self._rules = compile_rules(names or {})
        self._node_of = node_of
        self._told_collisions = False
        self._on_write = on_write
        self._soon_delay = soon
        self._lock = asyncio.Lock()
        self._pending = False
        self._soon = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._changed = True  # nothing written yet
        self._failures: dict[Path, str] = {}

    def changed(self) -> None:
        """Note that names or clients changed, for the next pass to publish."""
        self._changed = True

    def is_changed(self) -> bool:
        """Whether the next pass must write: something changed, or a write failed."""
        return self._changed or bool(self._failures)

    def failures(self) -> list[str]:
        """A sentence per published file whose last write failed."""
        return [f"cannot write {path}: {error}" for path, error in sorted(self._failures.items())]

    def refresh_soon(self) -> None:
        """Refresh within a second, once for any number of calls until then.

        For registrations, which change only the targets file: a burst of them costs one
        rewrite a second, not one per batch. Without `start`, nothing happens until the
        next pass.
        """
        if self._targets is not None:
            self._changed = True
            self._soon.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wg-fleet-publisher")
        self._task.add_done_callback(report_failure)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._soon.wait()
            await asyncio.sleep(self._soon_delay)
            self._soon.clear()
            try:
                await self.refresh()
            except Exception:
                logger.exception(
                    "could not publish the hosts or targets file; the next pass tries again"
                )

    async def refresh(self) -> None:
        self._pending = True
        if self._lock.locked():
            return
        async with self._lock:
            while self._pending:
                self._pending = False
                self._changed = False
                try:
                    entries = await self._database.read(
                        partial(
                            select_clients, fleets=self._fleets, named_only=self._targets is None
                        )
                    )
                except BaseException:
                    self._changed = True  # the next pass tries again
                    raise
                # Rendering and writing tens of thousands of lines stays off the loop.
                await asyncio.to_thread(self._write_all, entries)

    def _write_all(self, entries: list[Entry]) -> None:
        naming = assign_names(entries, self._rules, self._domain)
        named = len(naming.names)
        written = self._write(
            "hosts", self.path, lambda: render_named_hosts(naming), f"{named} named client(s)"
        )
        if written or not self._told_collisions:
            self._told_collisions = True  # at start-up, and then whenever the file changes
            for collision in naming.collisions:
                logger.warning("hosts file: %s", collision)
        if self._targets is not None:
            self._write(
                "targets",
                self._targets,
                lambda: render_targets(entries, self._target_port, self._node_of),
                f"{len(entries)} target(s)",
            )

    def _write(self, file: str, path: Path, render: Callable[[], str], what: str) -> bool:
        try:
            written = write_if_changed(path, render(), PUBLISHED_MODE)
        except OSError as error:
            # Remembered: `is_changed` stays true, so every pass tries again.
            if path not in self._failures:
                logger.error("cannot write %s: %s; retrying at every pass", path, error)
            self._failures[path] = error.strerror or str(error)
            if self._on_write is not None:
                self._on_write(file, False)
            return False
        if self._failures.pop(path, None) is not None:
            logger.info("wrote %s again after failing", path)
        if self._on_write is not None:
            self._on_write(file, True)
        if written:
            logger.info("wrote %s with %s", path, what)
        return written

"""This node's clients in memory, so the common ping needs no database read.

The database stays the source of truth: every pruning pass reloads a fleet's entries
from it, and registration, renames and prunes keep them current in between. Each fleet
is run by one node, so no other writer changes these rows behind our back; should an
entry still be stale, the ping falls back to the database and the next pass corrects it.
Also remembered: the last handshake stored per key, so a pass writes only newer ones.

Entries are kept as plain tuples of strings (labels as pairs), which the garbage
collector stops tracking; a `Member`, a tuple subclass, or a tuple holding a dict, it
would track. Tens of thousands of them would otherwise be walked by every full
collection, a pause of tens of milliseconds each time while registrations come in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple


class Changes(NamedTuple):
    """Keys a fleet's journaled changes added (registered) and removed."""

    added: frozenset[str]
    removed: frozenset[str]


class Member(NamedTuple):
    public_key: str
    hostname: str | None
    requested_hostname: str | None
    labels: Mapping[str, str] | None = None  # None: no labels


_Labels = tuple[tuple[str, str], ...] | None
_Entry = tuple[str, str | None, str | None, _Labels]


def _entry(
    public_key: str, hostname: str | None, requested: str | None, labels: Mapping[str, str] | None
) -> _Entry:
    return (public_key, hostname, requested, tuple(labels.items()) if labels else None)


Row = (
    tuple[str, str, str | None, str | None]
    | tuple[str, str, str | None, str | None, Mapping[str, str] | None]
)


Entries = dict[str, _Entry]


def entries_of(rows: Iterable[Row]) -> Entries:
    """Entries for `Roster.install` from (public key, address, hostname, requested[,
    labels]) rows; touches no roster, so it may run in a thread."""
    return {
        row[1]: _entry(row[0], row[2], row[3], row[4] if len(row) > 4 else None) for row in rows
    }


class Roster:
    def __init__(self) -> None:
        self._members: dict[str, Entries] = {}  # fleet -> address -> entry
        self._handshakes: dict[str, dict[str, int]] = {}  # fleet -> key -> epoch stored
        # fleet -> the changes made since `watch`: (address, entry before, entry after)
        self._journals: dict[str, list[tuple[str, _Entry | None, _Entry | None]]] = {}

    def load(self, fleet: str, rows: Iterable[Row]) -> None:
        """Replace the fleet's entries with (public key, address, hostname, requested[,
        labels])."""
        self.install(fleet, entries_of(rows))

    def watch(self, fleet: str) -> None:
        """Keep a journal of the fleet's changes from now on: a pass that read the rows
        here installs them later, with what happened in between replayed over them."""
        self._journals[fleet] = []

    def unwatch(self, fleet: str) -> None:
        self._journals.pop(fleet, None)

    def install(self, fleet: str, entries: Entries) -> Changes:
        """Make `entries` (read from the database when `watch` was called) the fleet's,
        with the changes journaled since replayed over them; the keys those changes
        added and removed. Without a `watch`, simply the entries."""
        added: set[str] = set()
        removed: set[str] = set()
        for address, before, after in self._journals.pop(fleet, []):
            if after is None:
                entries.pop(address, None)
            else:
                entries[address] = after
            if before is not None and (after is None or after[0] != before[0]):
                removed.add(before[0])
            if after is not None and (before is None or after[0] != before[0]):
                added.add(after[0])
        self._members[fleet] = entries
        return Changes(frozenset(added - removed), frozenset(removed - added))

    def _set(self, fleet: str, address: str, entry: _Entry | None) -> None:
        members = self._members.setdefault(fleet, {})
        before = members.get(address)
        if entry is None:
            members.pop(address, None)
        else:
            members[address] = entry
        journal = self._journals.get(fleet)
        if journal is not None:
            journal.append((address, before, entry))

    def find(self, fleet: str, address: str) -> Member | None:
        entry = self._members.get(fleet, {}).get(address)
        if entry is None:
            return None
        public_key, hostname, requested, labels = entry
        return Member(public_key, hostname, requested, dict(labels) if labels else None)

    def holds(self, fleet: str, address: str) -> bool:
        return address in self._members.get(fleet, {})

    def size(self, fleet: str) -> int | None:
        """How many clients the fleet has; None before its first load."""
        members = self._members.get(fleet)
        return None if members is None else len(members)

    def add(self, fleet: str, public_key: str, address: str) -> None:
        members = self._members.setdefault(fleet, {})
        current = members.get(address)
        if current is None or current[0] != public_key:
            self._set(fleet, address, (public_key, None, None, None))

    def rename(
        self,
        fleet: str,
        address: str,
        hostname: str | None,
        requested: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        member = self.find(fleet, address)
        if member is not None:
            self._set(fleet, address, _entry(member.public_key, hostname, requested, labels))

    def remove(self, fleet: str, addresses: Iterable[str]) -> None:
        members = self._members.get(fleet, {})
        for address in addresses:
            if address in members:
                self._set(fleet, address, None)

    def handshakes_known(self, fleet: str) -> bool:
        return fleet in self._handshakes

    def stored_handshakes(self, fleet: str) -> dict[str, int]:
        """Key -> epoch of the handshake last stored (missing: none stored)."""
        return self._handshakes.setdefault(fleet, {})

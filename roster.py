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


class Roster:
    def __init__(self) -> None:
        self._members: dict[str, dict[str, _Entry]] = {}  # fleet -> address -> entry
        self._handshakes: dict[str, dict[str, int]] = {}  # fleet -> key -> epoch stored

    def load(self, fleet: str, rows: Iterable[Row]) -> None:
        """Replace the fleet's entries with (public key, address, hostname, requested[,
        labels])."""
        self._members[fleet] = {
            row[1]: _entry(row[0], row[2], row[3], row[4] if len(row) > 4 else None) for row in rows
        }

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
            members[address] = (public_key, None, None, None)

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
            self._members[fleet][address] = _entry(member.public_key, hostname, requested, labels)

    def remove(self, fleet: str, addresses: Iterable[str]) -> None:
        members = self._members.get(fleet, {})
        for address in addresses:
            members.pop(address, None)

    def handshakes_known(self, fleet: str) -> bool:
        return fleet in self._handshakes

    def stored_handshakes(self, fleet: str) -> dict[str, int]:
        """Key -> epoch of the handshake last stored (missing: none stored)."""
        return self._handshakes.setdefault(fleet, {})

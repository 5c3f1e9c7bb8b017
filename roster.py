"""This node's clients in memory, so the common ping needs no database read.

The database stays the source of truth: every pruning pass reloads a fleet's entries
from it, and registration, renames and prunes keep them current in between. Each fleet
is run by one node, so no other writer changes these rows behind our back; should an
entry still be stale, the ping falls back to the database and the next pass corrects it.
Also remembered: the last handshake stored per key, so a pass writes only newer ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple


class Member(NamedTuple):
    public_key: str
    hostname: str | None
    requested_hostname: str | None
    labels: Mapping[str, str] | None = None  # None: no labels


Row = (
    tuple[str, str, str | None, str | None]
    | tuple[str, str, str | None, str | None, Mapping[str, str] | None]
)


class Roster:
    def __init__(self) -> None:
        self._members: dict[str, dict[str, Member]] = {}  # fleet -> address -> member
        self._handshakes: dict[str, dict[str, int]] = {}  # fleet -> key -> epoch stored

    def load(self, fleet: str, rows: Iterable[Row]) -> None:
        """Replace the fleet's entries with (public key, address, hostname, requested[,
        labels])."""
        self._members[fleet] = {
            row[1]: Member(row[0], row[2], row[3], (row[4] or None) if len(row) > 4 else None)
            for row in rows
        }

    def find(self, fleet: str, address: str) -> Member | None:
        return self._members.get(fleet, {}).get(address)

    def size(self, fleet: str) -> int | None:
        """How many clients the fleet has; None before its first load."""
        members = self._members.get(fleet)
        return None if members is None else len(members)

    def add(self, fleet: str, public_key: str, address: str) -> None:
        members = self._members.setdefault(fleet, {})
        current = members.get(address)
        if current is None or current.public_key != public_key:
            members[address] = Member(public_key, None, None)

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
            self._members[fleet][address] = Member(
                member.public_key, hostname, requested, labels or None
            )

    def remove(self, fleet: str, addresses: Iterable[str]) -> None:
        members = self._members.get(fleet, {})
        for address in addresses:
            members.pop(address, None)

    def handshakes_known(self, fleet: str) -> bool:
        return fleet in self._handshakes

    def stored_handshakes(self, fleet: str) -> dict[str, int]:
        """Key -> epoch of the handshake last stored (missing: none stored)."""
        return self._handshakes.setdefault(fleet, {})

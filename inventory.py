"""Ansible's dynamic-inventory JSON, built from what wg-fleet already knows.

Each client with a published name is keyed by its first name (the one its hosts-file
line starts with, so the inventory and DNS agree); a client without one is keyed by its
address and is in the group `unnamed`. Groups: `fleet_<fleet>`, `<key>_<value>` per
label, `online` and `offline`; `all.children` lists every group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from context import AppContext
from database import Client
from names import Entry, Naming, assign_names, compile_rules
from routes import ContextDep
from status import is_online
from wireguard import InterfaceDump

router = APIRouter()

NOT_GROUP_CHARACTER = re.compile(r"[^a-z0-9_]")


class Member(NamedTuple):
    """A client with what the inventory and the label groups need of it."""

    fleet: str
    address: str
    hostname: str | None
    labels: Mapping[str, str] | None
    registered_at: datetime
    public_key: str
    last_handshake: datetime | None

    def entry(self) -> Entry:
        return Entry(self.fleet, self.address, self.hostname, self.labels, self.registered_at)


def select_members(session: Session, fleets: Iterable[str]) -> list[Member]:
    """The fleets' clients in registration order (the order names are given out in)."""
    query = (
        select(
            Client.fleet,
            Client.address,
            Client.hostname,
            Client.labels,
            Client.registered_at,
            Client.public_key,
            Client.last_handshake,
        )
        .where(Client.fleet.in_(list(fleets)))
        .order_by(Client.registered_at, Client.id)
    )
    return [Member(*row) for row in session.execute(query)]


def member_online(member: Member, dump: InterfaceDump | None, now: datetime) -> bool:
    """Online by the live dump's handshake or the stored one, whichever is newer."""
    handshake = member.last_handshake
    peer = dump.peers.get(member.public_key) if dump else None
    if peer and peer.latest_handshake and (handshake is None or peer.latest_handshake > handshake):
        handshake = peer.latest_handshake
    return is_online(handshake, now)


async def members_online(context: AppContext, fleets: Iterable[str]) -> list[tuple[Member, bool]]:
    """The fleets' members, each with whether it is online (live status for this node's
    fleets, stored handshakes for other nodes')."""
    wanted = [fleet for fleet in fleets if fleet in context.config.fleets]
    members = await context.database.read(lambda session: select_members(session, wanted))
    dumps = {
        fleet: await context.status.dump(fleet)
        for fleet in wanted
        if fleet in context.config.local_fleets
    }
    now = context.clock()
    return [(member, member_online(member, dumps.get(member.fleet), now)) for member in members]


def group_name(key: str, value: str) -> str:
    """`<key>_<value>`: the value lowercased, other characters than a-z 0-9 _ made `_`."""
    return f"{key}_{NOT_GROUP_CHARACTER.sub('_', value.lower())}"


def build_inventory(
    members: Iterable[tuple[Member, bool]], naming: Naming, fleets: Iterable[str]
) -> dict[str, Any]:
    """The `--list` answer of an Ansible inventory script."""
    groups: dict[str, list[str]] = {f"fleet_{fleet}": [] for fleet in fleets}
    groups |= {"online": [], "offline": [], "unnamed": []}
    hostvars: dict[str, dict[str, Any]] = {}
    for member, online in members:
        names = naming.names.get((member.fleet, member.address))
        host = names[0] if names else member.address
        labels = dict(sorted((member.labels or {}).items()))
        hostvars[host] = {
            "ansible_host": member.address,
            "wg_fleet": member.fleet,
            "wg_fleet_labels": labels,
            "wg_fleet_online": online,
        }
        wanted = [f"fleet_{member.fleet}", "online" if online else "offline"]
        wanted += [group_name(key, value) for key, value in labels.items()]
        if not names:
            wanted.append("unnamed")
        for group in wanted:
            groups.setdefault(group, []).append(host)
    inventory: dict[str, Any] = {"_meta": {"hostvars": hostvars}}
    inventory["all"] = {"children": sorted(groups)}
    for group, hosts in sorted(groups.items()):
        inventory[group] = {"hosts": sorted(set(hosts))}
    return inventory


@router.get("/api/inventory")
async def api_inventory(context: ContextDep) -> dict[str, Any]:
    """Every client of every fleet as an Ansible dynamic inventory (`--list` format)."""
    config = context.config
    members = await members_online(context, config.fleets)
    rules = compile_rules({fleet: config.names_of(fleet) for fleet in config.fleets})
    naming = assign_names((member.entry() for member, _ in members), rules, config.domain)
    return build_inventory(members, naming, config.fleets)

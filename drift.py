"""Drift repair of one fleet's interface: it exists, its link is up, it holds its address,
listens on the configured port and has the config file's key.

The differences are decided by the pure `reconcile.interface_differences`; this module
reads the interface, applies one fix per difference, logs one line and counts one
`wg_fleet_repairs_total{what}` per repair. Peers are repaired by the sweep itself
(`pruning.py`), which knows the database's rows. The caller holds the fleet's lock.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from ipaddress import IPv6Interface

from context import AppContext
from reconcile import Difference, interface_differences
from wireguard import InterfaceDump, LinkState, interface_name

logger = logging.getLogger(__name__)


def note_repair(context: AppContext, fleet: str, difference: Difference, done: str) -> None:
    """The one log line and the count for one repair."""
    logger.warning("%s; %s", difference.text, done)
    context.metrics.repaired(fleet, difference.what)


@dataclass(frozen=True)
class LinkRepair:
    created: bool  # by `wg-quick`, from the config file: key, port, address
    brought_up: bool  # created, or its link set up again
    link: LinkState  # as it is now


async def repair_link(context: AppContext, fleet: str, *, at_startup: bool) -> LinkRepair:
    """Make the interface exist, be up and hold its address."""
    wireguard = context.wireguard
    settings = context.config.fleets[fleet]
    key = context.server_keys[fleet]
    interface = interface_name(fleet)
    wanted = IPv6Interface(settings.interface_address)
    link = await wireguard.link(fleet)
    if link is None:
        await wireguard.bring_up(fleet)
        difference = interface_differences(interface, settings, key, None, None)[0]
        if at_startup:
            # After a reboot this is how every start begins: not a repair.
            logger.info("%s was down; brought it up", interface)
        else:
            note_repair(context, fleet, difference, "brought it up with wg-quick")
        return LinkRepair(True, True, LinkState(True, frozenset({wanted})))
    addresses = set(link.addresses)
    brought_up = False
    for difference in interface_differences(interface, settings, key, link, None):
        if difference.what == "link":
            await wireguard.set_up(fleet)
            brought_up = True
            note_repair(context, fleet, difference, "set it up")
            # Linux drops a link's IPv6 addresses when it goes down: look again.
            again = await wireguard.link(fleet)
            addresses = set(again.addresses) if again is not None else set()
            if wanted in addresses:
                continue
            difference = Difference("address", f"interface {interface} lacks its address {wanted}")
        if difference.what == "address" and wanted not in addresses:
            await wireguard.add_address(fleet, wanted)
            addresses.add(wanted)
            note_repair(context, fleet, difference, "added it again")
    return LinkRepair(False, brought_up, LinkState(True, frozenset(addresses)))


async def repair_settings(
    context: AppContext, fleet: str, link: LinkState, dump: InterfaceDump
) -> InterfaceDump:
    """Set the listen port and the key back to the config's; return the dump as it now is."""
    wireguard = context.wireguard
    settings = context.config.fleets[fleet]
    key = context.server_keys[fleet]
    for difference in interface_differences(interface_name(fleet), settings, key, link, dump):
        if difference.what == "port":
            await wireguard.set_listen_port(fleet, settings.port)
            dump = dataclasses.replace(dump, listen_port=settings.port)
            note_repair(context, fleet, difference, f"set it back to {settings.port}")
        elif difference.what == "key":
            private = wireguard.private_key(fleet)
            if private is None:
                raise RuntimeError(f"{wireguard.config_path(fleet)} has no valid PrivateKey")
            await wireguard.set_private_key(fleet, private)
            dump = dataclasses.replace(dump, public_key=key)
            note_repair(context, fleet, difference, "set the config file's key again")
    return dump

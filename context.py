"""The explicit context one running app works with, instead of module-level globals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from access import RateLimiter
from activity import ActivityBuffer
from command import Runner
from config import Config
from database import Database
from hosts import Publisher
from linkstate import LinkStates
from metrics import Metrics
from pings import Pinger
from registry import Clock, Registry
from roster import Roster
from status import StatusCache
from wireguard import WireGuard


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AppContext:
    """Everything a request handler or background task may touch, built by the lifespan."""

    config: Config
    runner: Runner
    clock: Clock
    database: Database
    wireguard: WireGuard
    server_keys: dict[str, str]
    started_at: datetime
    metrics: Metrics
    limiter: RateLimiter | None = None
    fleet_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # One pass per fleet at a time (a pass holds the fleet's lock only in part).
    pass_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Fleet -> why its last pass failed, for /health; cleared by the next good pass.
    failed_passes: dict[str, str] = field(default_factory=dict)
    registry: Registry = field(init=False)
    publisher: Publisher = field(init=False)
    status: StatusCache = field(init=False)
    link_states: LinkStates = field(init=False)
    activity: ActivityBuffer = field(init=False)
    roster: Roster = field(default_factory=Roster)
    pinger: Pinger = field(init=False)

    def __post_init__(self) -> None:
        for name in self.config.local_fleets:
            self.fleet_locks.setdefault(name, asyncio.Lock())
            self.pass_locks.setdefault(name, asyncio.Lock())
        self.status = StatusCache(self.wireguard)
        self.link_states = LinkStates(self.wireguard)
        self.metrics.start_fleets(list(self.config.fleets))
        self.publisher = Publisher(
            self.config.hosts_file,
            self.database,
            self.config.fleets,
            self.config.domain,
            self.config.prometheus_targets_file,
            self.config.prometheus_target_port,
            names={fleet: self.config.names_of(fleet) for fleet in self.config.fleets},
            node_of=self.config.node_of,
            on_write=self.metrics.file_written,
        )
        self.registry = Registry(
            self.config,
            self.database,
            self.wireguard,
            self.server_keys,
            self.clock,
            self.fleet_locks,
            self.metrics,
            self.publisher,
            self.roster,
        )
        self.activity = ActivityBuffer(self.database)
        self.pinger = Pinger(
            self.config,
            self.database,
            self.activity,
            self.publisher,
            self.roster,
            self.metrics,
            self.clock,
        )

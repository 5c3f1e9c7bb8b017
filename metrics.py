"""Prometheus metrics, one registry per app (no module-level globals), no per-client labels.

Every per-fleet series also carries `node`, the wg-fleet node that runs the fleet.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self, node_of: Callable[[str], str]) -> None:
        self._node_of = node_of
        self._children: dict[tuple[Counter, str], Counter] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.clients = Gauge(
            "wg_fleet_clients", "Registered clients.", ["fleet", "node"], registry=self.registry
        )
        self.clients_online = Gauge(
            "wg_fleet_clients_online",
            "Clients whose last WireGuard handshake is under 3 minutes old.",
            ["fleet", "node"],
            registry=self.registry,
        )
        self.registrations = Counter(
            "wg_fleet_registrations",
            "Successful registrations.",
            ["fleet", "node"],
            registry=self.registry,
        )
        self.pings = Counter(
            "wg_fleet_pings", "Successful pings.", ["fleet", "node"], registry=self.registry
        )
        self.pruned = Counter(
            "wg_fleet_pruned",
            "Clients removed for inactivity.",
            ["fleet", "node"],
            registry=self.registry,
        )
        self.prune_duration = Histogram(
            "wg_fleet_prune_duration_seconds",
            "Duration of one pruning pass over all fleets.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.command_failures = Counter(
            "wg_fleet_command_failures",
            "External commands (wg, wg-quick, ip) that failed or timed out.",
            ["command"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "wg_fleet_webhook_deliveries",
            "Webhook delivery attempts by result: delivered, failed (retried) or given_up.",
            ["result"],
            registry=self.registry,
        )
        self.webhook_pending = Gauge(
            "wg_fleet_webhook_pending",
            "Events waiting to be delivered, summed over the webhook URLs.",
            registry=self.registry,
        )
        for result in ("delivered", "failed", "given_up"):
            self.webhook_deliveries.labels(result=result)
        self.repairs = Counter(
            "wg_fleet_repairs",
            "Differences between an interface and its config or database that were repaired.",
            ["fleet", "node", "what"],
            registry=self.registry,
        )
        self.file_write_failures = Counter(
            "wg_fleet_file_write_failures",
            "Failed writes of a published file (retried at every pass until one succeeds).",
            ["file"],
            registry=self.registry,
        )
        self.file_write_failing = Gauge(
            "wg_fleet_file_write_failing",
            "1 while the last write of a published file failed, else 0.",
            ["file"],
            registry=self.registry,
        )

    def start_fleets(self, fleets: list[str]) -> None:
        """Export every fleet's series from the start, at zero, so rates are defined."""
        for fleet in fleets:
            for metric in (self.registrations, self.pings, self.pruned):
                metric.labels(fleet=fleet, node=self._node_of(fleet))

    def registered(self, fleet: str) -> None:
        self._per_fleet(self.registrations, fleet).inc()

    def pinged(self, fleet: str) -> None:
        self._per_fleet(self.pings, fleet).inc()

    def _per_fleet(self, counter: Counter, fleet: str) -> Counter:
        """The fleet's child of `counter`, looked up once: `labels()` costs more than the
        increment, on the two routes every client calls."""
        child = self._children.get((counter, fleet))
        if child is None:
            child = counter.labels(fleet=fleet, node=self._node_of(fleet))
            self._children[(counter, fleet)] = child
        return child

    def pruned_clients(self, fleet: str, count: int) -> None:
        self.pruned.labels(fleet=fleet, node=self._node_of(fleet)).inc(count)

    def webhook_delivered(self, result: str) -> None:
        self.webhook_deliveries.labels(result=result).inc()

    def repaired(self, fleet: str, what: str) -> None:
        self.repairs.labels(fleet=fleet, node=self._node_of(fleet), what=what).inc()

    def file_written(self, file: str, ok: bool) -> None:
        """Record the outcome of one write of a published file (`hosts` or `targets`)."""
        self.file_write_failing.labels(file=file).set(0 if ok else 1)
        if not ok:
            self.file_write_failures.labels(file=file).inc()

    def command_failed(self, command: str) -> None:
        self.command_failures.labels(command=command).inc()

    def render(self, clients: dict[str, int], online: dict[str, int]) -> bytes:
        """The exposition text, with the gauges set to the counts just taken."""
        for fleet, count in clients.items():
            self.clients.labels(fleet=fleet, node=self._node_of(fleet)).set(count)
        for fleet, count in online.items():
            self.clients_online.labels(fleet=fleet, node=self._node_of(fleet)).set(count)
        return generate_latest(self.registry)

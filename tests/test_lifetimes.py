"""lifetimes.py and its config: per-fleet prune_timeout, pending_timeout, expires_at."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, load_config
from pruning import sweep_all
from tests.conftest import FLEET, Running
from tests.fakes import FakeClock, FakeWireGuard
from tests.test_events import events, handshake, kinds, ping, register

StartApp = Callable[..., Any]

BASE = """\
domain: fleet.test
prune_timeout: 30m
fleets:
  alpha:
    ip6: fd00:1::1
    subnet: fd00:1::/64
    external_ip: 192.0.2.1
    port: 51820
"""


def fleets(make_config: Callable[..., Any], **alpha: Any) -> Any:
    base = {"ip6": "fd00:1::1", "subnet": "fd00:1::/64", "external_ip": "192.0.2.1"}
    beta = {"ip6": "fd00:2::1", "subnet": "fd00:2::/64", "external_ip": "192.0.2.1"}
    return {FLEET: {**base, "port": 51820, **alpha}, "beta": {**beta, "port": 51821}}


def load(tmp_path: Path, extra: str) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + extra)
    return load_config(path)


@pytest.mark.parametrize(
    "text",
    [
        "    expires_at: 2026-07-01T18:00:00+02:00\n",  # a YAML timestamp
        '    expires_at: "2026-07-01T18:00:00+02:00"\n',  # quoted
        '    expires_at: "2026-07-01T16:00:00Z"\n',
    ],
)
def test_expires_at_with_a_zone(tmp_path: Path, text: str) -> None:
    config = load(tmp_path, text)
    assert config.fleets["alpha"].expires_at == datetime(2026, 7, 1, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["    expires_at: 2026-07-01T18:00:00\n", '    expires_at: "2026-07-01 18:00"\n']
)
def test_expires_at_without_a_zone_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert "fleets.alpha.expires_at" in str(caught.value)
    assert "has no time zone" in str(caught.value)


def test_pending_longer_than_prune_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "    prune_timeout: 10m\n    pending_timeout: 20m\n")
    assert "fleets.alpha.pending_timeout" in str(caught.value)
    assert "longer than fleet alpha's prune_timeout" in str(caught.value)


def test_a_global_pending_timeout_is_checked_against_each_fleet(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "    prune_timeout: 5m\npending_timeout: 10m\n")
    assert caught.value.field == "pending_timeout"


def test_timeouts_default_to_the_fleets_and_the_global_ones(tmp_path: Path) -> None:
    config = load(tmp_path, "    prune_timeout: 10m\n")
    assert config.prune_timeout_of("alpha") == timedelta(minutes=10)
    assert config.pending_timeout_of("alpha") == timedelta(minutes=10)
    config = load(tmp_path, "pending_timeout: 2m\n")
    assert config.prune_timeout_of("alpha") == timedelta(minutes=30)
    assert config.pending_timeout_of("alpha") == timedelta(minutes=2)


async def test_a_fleets_own_prune_timeout_wins(
    start_app: StartApp, make_config: Callable[..., Any], clock: FakeClock
) -> None:
    config = make_config(prune_timeout="1h", fleets=fleets(make_config, prune_timeout="10m"))
    async with start_app(config) as running:
        client = await register(running)
        async with running.client() as http:
            other = (await http.post("/fleet/beta/register")).json()
        clock.advance(minutes=11)
        await sweep_all(running.context)
        body = await events(running, "?type=pruned")
    assert [e["address"] for e in body["events"]] == [client["address"]]
    assert other["address"] != client["address"]


async def test_never_connected_clients_are_pruned_sooner_as_pending(
    start_app: StartApp, make_config: Callable[..., Any], fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    config = make_config(fleets=fleets(make_config, pending_timeout="5m"))
    async with start_app(config) as running:
        silent = await register(running)
        connected = await register(running)
        handshake(fake_wg, connected["public_key"], clock, ago=1)
        clock.advance(minutes=3)
        await sweep_all(running.context)  # within the start-up grace: nothing goes
        clock.advance(minutes=3)
        await sweep_all(running.context)
        body = await events(running, "?type=pruned")
    assert [(e["address"], e["detail"]) for e in body["events"]] == [
        (silent["address"], {"reason": "pending"})
    ]


async def test_an_expired_fleet_prunes_everyone_and_answers_410(
    start_app: StartApp, make_config: Callable[..., Any], clock: FakeClock
) -> None:
    ends = clock.now + timedelta(hours=1)
    config = make_config(fleets=fleets(make_config, expires_at=ends.isoformat()))
    async with start_app(config) as running:
        client = await register(running)
        await ping(running, client["address"], "excavator")
        clock.advance(hours=1)
        async with running.in_tunnel(client["address"]) as tunnel:
            late_ping = await tunnel.post(f"/fleet/{FLEET}/ping", json={})
        async with running.client() as http:
            late = await http.post(f"/fleet/{FLEET}/register")
            # Checked right after the fleet is known: before the tunnel check's 403.
            outside = await http.post(f"/fleet/{FLEET}/ping", json={})
            beta = await http.post("/fleet/beta/register")
        await sweep_all(running.context)
        body = await events(running, "?type=pruned")
        remaining = await clients_of(running)
    assert late.status_code == late_ping.status_code == outside.status_code == 410
    assert late.json()["detail"] == (
        f"Fleet {FLEET} ended at {ends.isoformat().replace('+00:00', 'Z')}; "
        "it takes no more clients or pings."
    )
    assert beta.status_code == 200
    assert kinds(body) == [("pruned", {"reason": "expired"})]
    assert remaining == []


async def test_a_server_started_after_the_end_still_starts(
    start_app: StartApp, make_config: Callable[..., Any], clock: FakeClock
) -> None:
    ended = clock.now - timedelta(days=1)
    config = make_config(fleets=fleets(make_config, expires_at=ended.isoformat()))
    async with start_app(config) as running, running.client() as http:
        health = await http.get("/health")
        late = await http.post(f"/fleet/{FLEET}/register")
    assert health.status_code == 200
    assert late.status_code == 410


async def clients_of(running: Running) -> list[str]:
    async with running.client() as http:
        response = await http.get(f"/api/fleets/{FLEET}/clients")
    return [client["address"] for client in response.json()["clients"]]

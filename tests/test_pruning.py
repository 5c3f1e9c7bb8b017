"""pruning.py: the pure pruning decision, the stored sweep, and sweeps through a running app."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import pruning
from context import AppContext
from database import Client, Database
from leaving import leave_fleet
from pruning import Pruner, SweepReport, newer_handshakes, prune_cutoff, store_sweep
from tests.conftest import Running
from tests.fakes import FakeClock, FakeWireGuard
from wireguard import InterfaceDump, PeerStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=30)
LONG_AGO = NOW - timedelta(days=1)
STRAY = base64.b64encode(b"\x07" * 32).decode()

StartApp = Callable[..., Any]


def dump_with(handshakes: dict[str, datetime | None]) -> InterfaceDump:
    peers = {
        key: PeerStatus(key, None, "", int(seen.timestamp()) if seen else 0)
        for key, seen in handshakes.items()
    }
    return InterfaceDump("serverpublic=", 51820, peers)


# --- prune_cutoff and newer_handshakes ---------------------------------------------------


def test_the_cutoff_is_now_minus_the_timeout() -> None:
    assert prune_cutoff(NOW, TIMEOUT, started_at=LONG_AGO) == NOW - TIMEOUT


@pytest.mark.parametrize(
    ("age", "grace"),
    [
        (timedelta(0), True),
        (TIMEOUT - timedelta(seconds=1), True),
        (TIMEOUT, True),
        (TIMEOUT + timedelta(seconds=1), False),
    ],
)
def test_start_up_grace_prunes_nothing_for_one_timeout(age: timedelta, grace: bool) -> None:
    cutoff = prune_cutoff(NOW, TIMEOUT, started_at=NOW - age)
    assert (cutoff is None) is grace


def test_newer_handshakes_takes_only_newer_ones_of_known_clients() -> None:
    stored = NOW - timedelta(hours=1)
    dump = dump_with(
        {
            "key-1": NOW,  # newer than stored: taken
            "key-2": stored - timedelta(minutes=1),  # older: left
            "key-3": NOW,  # first handshake: taken
            "key-4": None,  # no handshake: left
            "stray": NOW,  # not a client: left
        }
    )
    known = {f"key-{n}": int(stored.timestamp()) for n in (1, 2, 4)}
    clients = {f"key-{n}": f"fd00:1::{n}" for n in (1, 2, 3, 4)}
    assert newer_handshakes(dump, known, clients) == {
        "key-1": int(NOW.timestamp()),
        "key-3": int(NOW.timestamp()),
    }


# --- store_sweep on SQLite ---------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(str(tmp_path / "clients.db"))
    db.migrate()
    yield db
    db.close()


def row(number: int, last_seen: datetime, last_handshake: datetime | None = None) -> Client:
    return Client(
        fleet="alpha",
        address=f"fd00:1::{number}",
        public_key=f"key-{number}",
        source_ip="192.0.2.50",
        registered_at=LONG_AGO,
        last_seen=last_seen,
        last_handshake=last_handshake,
        last_active=max(last_seen, last_handshake or last_seen),
    )


async def insert(database: Database, *rows: Client) -> None:
    def job(session: Session) -> None:
        session.add_all(rows)
        session.commit()

    await database.write(job)


async def stored(database: Database) -> dict[str, tuple[datetime | None, datetime]]:
    """public key → (last_handshake, last_active) of every row left."""

    def job(session: Session) -> dict[str, tuple[datetime | None, datetime]]:
        rows = session.execute(select(Client.public_key, Client.last_handshake, Client.last_active))
        return {key: (handshake, active) for key, handshake, active in rows}

    return await database.read(job)


async def test_store_sweep_stores_activity_first_then_prunes(database: Database) -> None:
    await insert(
        database,
        row(1, LONG_AGO),  # inactive: pruned
        row(2, LONG_AGO),  # inactive, but a buffered ping arrived: kept
        row(3, LONG_AGO),  # a handshake seen in this pass: kept
        row(4, NOW),
    )
    handshake = NOW - timedelta(minutes=2)
    pending = {("alpha", "fd00:1::2"): NOW}
    pruned = await database.write(
        lambda session: store_sweep(
            session, "alpha", {"key-3": int(handshake.timestamp())}, NOW - TIMEOUT, pending
        )
    )
    assert [(p.public_key, p.address) for p in pruned] == [("key-1", "fd00:1::1")]
    assert await stored(database) == {
        "key-2": (None, NOW),
        "key-3": (handshake, handshake),
        "key-4": (None, NOW),
    }


async def test_a_handshake_never_moves_activity_back(database: Database) -> None:
    await insert(database, row(1, NOW))
    old = NOW - timedelta(hours=3)
    await database.write(
        lambda session: store_sweep(session, "alpha", {"key-1": int(old.timestamp())}, None)
    )
    assert await stored(database) == {"key-1": (old, NOW)}


async def test_store_sweep_during_the_grace_prunes_nothing(database: Database) -> None:
    await insert(database, row(1, LONG_AGO))
    pruned = await database.write(lambda session: store_sweep(session, "alpha", {}, None))
    assert pruned == []
    assert list(await stored(database)) == ["key-1"]


async def test_store_sweep_leaves_other_fleets_alone(database: Database) -> None:
    other = row(9, LONG_AGO)
    other.fleet = "beta"
    await insert(database, row(1, LONG_AGO), other)
    pruned = await database.write(lambda session: store_sweep(session, "alpha", {}, NOW - TIMEOUT))
    assert [p.public_key for p in pruned] == ["key-1"]
    assert list(await stored(database)) == ["key-9"]


# --- sweeps through a running app (fake wg, injected clock) ------------------------------


async def register(running: Running) -> tuple[str, str]:
    """Register a client in fleet alpha; return its address and public key."""
    async with running.client() as http:
        response = await http.post("/fleet/alpha/register")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["address"], body["public_key"]


async def ping(running: Running, address: str, hostname: str | None = None) -> dict[str, Any]:
    async with running.in_tunnel(address) as http:
        response = await http.post(
            "/fleet/alpha/ping", json={} if hostname is None else {"hostname": hostname}
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def rows(running: Running) -> dict[str, tuple[str, str | None, datetime | None]]:
    """public key → (address, hostname, last_handshake) of fleet alpha's rows."""

    def job(session: Session) -> dict[str, tuple[str, str | None, datetime | None]]:
        result = session.execute(
            select(Client.public_key, Client.address, Client.hostname, Client.last_handshake).where(
                Client.fleet == "alpha"
            )
        )
        return {key: (address, name, handshake) for key, address, name, handshake in result}

    return await running.context.database.read(job)


def peers(fake_wg: FakeWireGuard) -> dict[str, str]:
    return dict(fake_wg.interfaces["wg_alpha"].peers)


@pytest.mark.parametrize(
    ("seconds", "pruned"),
    [(9 * 60, 0), (10 * 60, 0), (10 * 60 + 1, 1)],
)
async def test_sweep_prunes_after_the_timeout(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock, seconds: int, pruned: int
) -> None:
    async with start_app(prune_timeout="10m") as running:
        _, key = await register(running)
        clock.advance(seconds=seconds)
        fake_wg.calls.clear()
        report = await pruning.sweep_fleet(running.context, "alpha")
        assert report == SweepReport("alpha", pruned, 0, 0, False)
        assert (key in peers(fake_wg)) is not pruned
        assert (key in await rows(running)) is not pruned
        assert fake_wg.count("wg", "show") == 1
        assert fake_wg.count("wg", "set") == pruned
        assert fake_wg.count("wg", "addconf") == 0


async def test_sweep_prunes_only_the_inactive(
    start_app: StartApp,
    fake_wg: FakeWireGuard,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with start_app(prune_timeout="10m") as running:
        gone = [await register(running) for _ in range(3)]
        clock.advance(minutes=5)
        kept_address, kept_key = await register(running)
        clock.advance(minutes=6)
        await ping(running, kept_address)  # refreshes it; the first three are 11 minutes old
        fake_wg.calls.clear()
        caplog.set_level(logging.INFO, logger="pruning")
        report = await pruning.sweep_fleet(running.context, "alpha")

        assert report == SweepReport("alpha", 3, 0, 0, False)
        assert peers(fake_wg) == {kept_key: f"{kept_address}/128"}
        assert list(await rows(running)) == [kept_key]
        assert fake_wg.count("wg", "show") == 1
        assert fake_wg.count("wg", "set") == 1  # one bulk removal
        messages = [r.getMessage() for r in caplog.records if r.name == "pruning"]
        assert len(messages) == 1
        assert "pruned 3 inactive client(s)" in messages[0]
        assert all(address in messages[0] for address, _ in gone)


async def test_recent_handshake_survives_and_is_persisted(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app(prune_timeout="10m") as running:
        address, key = await register(running)
        clock.advance(minutes=11)
        handshake = int(clock.now.timestamp()) - 60
        fake_wg.interfaces["wg_alpha"].handshakes[key] = handshake
        report = await pruning.sweep_fleet(running.context, "alpha")
        assert report.pruned == 0
        moment = datetime.fromtimestamp(handshake, UTC)
        assert await rows(running) == {key: (address, None, moment)}
        assert key in peers(fake_wg)

        # The persisted handshake counts after a reboot wiped the interface's memory too.
        fake_wg.interfaces["wg_alpha"].handshakes.clear()
        clock.advance(minutes=8)
        assert (await pruning.sweep_fleet(running.context, "alpha")).pruned == 0
        assert (await rows(running))[key][2] == moment
        clock.advance(minutes=3)  # now 11 minutes after the handshake
        assert (await pruning.sweep_fleet(running.context, "alpha")).pruned == 1
        assert await rows(running) == {}
        assert peers(fake_wg) == {}


async def test_sweep_repairs_drift_with_one_dump_and_bulk_calls(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app(prune_timeout="10m") as running:
        (a_address, a_key), (b_address, b_key), (c_address, c_key) = [
            await register(running) for _ in range(3)
        ]
        interface = fake_wg.interfaces["wg_alpha"]
        del interface.peers[a_key]  # lost
        interface.peers[b_key] = "fd00:1::dead/128"  # wrong allowed IPs
        interface.peers[STRAY] = "fd00:1::beef/128"  # unknown to the database
        fake_wg.calls.clear()

        report = await pruning.sweep_fleet(running.context, "alpha")

        assert report == SweepReport("alpha", 0, 1, 1, False, fixed=1)
        assert peers(fake_wg) == {
            a_key: f"{a_address}/128",
            b_key: f"{b_address}/128",
            c_key: f"{c_address}/128",
        }
        assert fake_wg.count("wg", "show") == 1
        # One `wg set` removes the stray, one sets b's allowed IPs back (b stays a peer).
        assert fake_wg.count("wg", "set") == 2
        assert ("wg", "set", "wg_alpha", "peer", b_key, "allowed-ips", f"{b_address}/128") in (
            fake_wg.calls
        )
        assert fake_wg.count("wg", "addconf") == 1

        # A second pass finds nothing to do.
        fake_wg.calls.clear()
        assert await pruning.sweep_fleet(running.context, "alpha") == SweepReport(
            "alpha", 0, 0, 0, False
        )
        assert fake_wg.count("wg", "set") == fake_wg.count("wg", "addconf") == 0


async def test_sweep_all_dumps_each_fleet_once(start_app: StartApp, fake_wg: FakeWireGuard) -> None:
    async with start_app(prune_timeout="10m") as running:
        await register(running)
        fake_wg.calls.clear()
        reports = await pruning.sweep_all(running.context)
        assert [report.fleet for report in reports] == ["alpha", "beta"]
        assert fake_wg.count("wg", "show", "wg_alpha") == 1
        assert fake_wg.count("wg", "show", "wg_beta") == 1
        assert fake_wg.count("wg", "show") == 2
        assert fake_wg.count("wg", "set") == fake_wg.count("wg", "addconf") == 0


async def test_interface_set_down_is_brought_up(
    start_app: StartApp, fake_wg: FakeWireGuard, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_app(prune_timeout="10m") as running:
        address, key = await register(running)
        fake_wg.interfaces["wg_alpha"].up = False
        fake_wg.calls.clear()
        with caplog.at_level(logging.WARNING, logger="pruning"):
            report = await pruning.sweep_fleet(running.context, "alpha")
        assert report == SweepReport("alpha", 0, 0, 0, True)
        assert fake_wg.interfaces["wg_alpha"].up
        assert peers(fake_wg) == {key: f"{address}/128"}
        assert fake_wg.count("ip", "link", "set", "up", "dev", "wg_alpha") == 1
        assert fake_wg.count("wg-quick") == 0
        assert any("interface wg_alpha is down" in r.getMessage() for r in caplog.records)


async def test_deleted_interface_comes_back_with_its_peers(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app(prune_timeout="10m") as running:
        clients = [await register(running) for _ in range(2)]
        del fake_wg.interfaces["wg_alpha"]
        fake_wg.calls.clear()
        report = await pruning.sweep_fleet(running.context, "alpha")
        assert report == SweepReport("alpha", 0, 2, 0, True)
        assert fake_wg.interfaces["wg_alpha"].up
        assert peers(fake_wg) == {key: f"{address}/128" for address, key in clients}
        assert fake_wg.count("wg-quick", "up") == 1
        assert fake_wg.count("wg", "addconf") == 1


async def test_pruned_names_leave_the_hosts_file(start_app: StartApp, clock: FakeClock) -> None:
    async with start_app(prune_timeout="10m") as running:
        hosts_path = running.context.config.hosts_file
        (old_address, _), (new_address, new_key) = [await register(running) for _ in range(2)]
        assert (await ping(running, old_address, "excavator"))["hostname"] == "excavator"
        assert (await ping(running, new_address, "excavator"))["hostname"] == "excavator2"
        assert hosts_path.read_text(encoding="utf-8") == "".join(
            sorted(
                [
                    f"{old_address} excavator.alpha.fleet.test\n",
                    f"{new_address} excavator2.alpha.fleet.test\n",
                ],
                key=lambda line: IPv6Address(line.split()[0]),
            )
        )

        clock.advance(minutes=11)
        await ping(running, new_address)  # only the second client stays active
        reports = await pruning.sweep_all(running.context)

        assert [report.pruned for report in reports] == [1, 0]
        assert hosts_path.read_text(encoding="utf-8") == (
            f"{new_address} excavator2.alpha.fleet.test\n"
        )
        # The name is free again: the next ping promotes the survivor.
        body = await ping(running, new_address, "excavator")
        assert body == {
            "status": "ok",
            "hostname": "excavator",
            "fqdn": "excavator.alpha.fleet.test",
            "labels": {},
        }
        assert hosts_path.read_text(encoding="utf-8") == (
            f"{new_address} excavator.alpha.fleet.test\n"
        )
        assert (await rows(running))[new_key][1] == "excavator"


# --- the Pruner task ---------------------------------------------------------------------


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def pruner_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "wg-fleet-pruner"]


async def test_pruner_survives_a_failing_pass(
    start_app: StartApp, fake_wg: FakeWireGuard, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_app(prune_timeout="10m") as running:
        pruner: Pruner = running.app.state.pruner
        [task] = pruner_tasks()
        interface = fake_wg.interfaces["wg_alpha"]
        interface.peers[STRAY] = "fd00:1::beef/128"

        def failures() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "pruning" and r.levelno == logging.ERROR]

        fake_wg.fail = {"show"}
        with caplog.at_level(logging.ERROR, logger="pruning"):
            pruner.wake()
            await eventually(lambda: len(failures()) == 2, "both fleets' failures in the log")
        assert all(record.exc_info is not None for record in failures())
        assert "fleet alpha" in failures()[0].getMessage()
        assert "fleet beta" in failures()[1].getMessage()
        assert not task.done()
        assert STRAY in interface.peers

        fake_wg.fail = set()
        pruner.wake()
        await eventually(lambda: STRAY not in interface.peers, "the next pass to remove the stray")
        assert not task.done()

        await pruner.stop()
        assert task.cancelled()
        assert pruner_tasks() == []


async def test_pruner_loop_survives_an_exception_from_the_pass(
    start_app: StartApp,
    fake_wg: FakeWireGuard,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_sweep_all = pruning.sweep_all
    passes: list[str] = []

    async def fails_once(context: AppContext, *, at_startup: bool = False) -> list[SweepReport]:
        passes.append("pass")
        if len(passes) == 1:
            raise RuntimeError("the database went away")
        return await real_sweep_all(context, at_startup=at_startup)

    async with start_app(prune_timeout="10m") as running:
        pruner: Pruner = running.app.state.pruner
        [task] = pruner_tasks()
        monkeypatch.setattr(pruning, "sweep_all", fails_once)
        interface = fake_wg.interfaces["wg_alpha"]
        interface.peers[STRAY] = "fd00:1::beef/128"
        with caplog.at_level(logging.ERROR, logger="pruning"):
            pruner.wake()
            await eventually(lambda: len(passes) == 1 and bool(caplog.records), "the failure")
        [record] = [r for r in caplog.records if r.name == "pruning"]
        assert "a pruning pass failed" in record.getMessage()
        assert record.exc_info is not None
        assert not task.done()

        pruner.wake()
        await eventually(lambda: STRAY not in interface.peers, "the next pass to succeed")
        assert len(passes) == 2


async def test_pruner_wake_runs_a_pass(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app(prune_timeout="10m") as running:
        pruner: Pruner = running.app.state.pruner
        _, key = await register(running)
        clock.advance(minutes=11)
        pruner.wake()
        await eventually(lambda: key not in peers(fake_wg), "the woken pass to prune")
        assert await rows(running) == {}


# --- one fleet failing -------------------------------------------------------------------


async def test_a_failing_fleet_does_not_stop_the_others(
    start_app: StartApp, fake_wg: FakeWireGuard, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_app(prune_timeout="10m") as running:
        fake_wg.interfaces["wg_beta"].peers[STRAY] = "fd00:2::beef/128"
        del fake_wg.interfaces["wg_alpha"]
        fake_wg.fail = {"wg-quick"}  # alpha cannot be brought back
        with caplog.at_level(logging.ERROR, logger="pruning"):
            reports = await pruning.sweep_all(running.context)
        assert [report.fleet for report in reports] == ["beta"]
        assert STRAY not in fake_wg.interfaces["wg_beta"].peers
        assert any("alpha" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_hosts_file_follows_deletions_even_when_wg_fails(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock
) -> None:
    async with start_app(prune_timeout="10m") as running:
        address, _ = await register(running)
        await ping(running, address, "excavator")
        hosts_path = running.context.config.hosts_file
        assert hosts_path.read_text(encoding="utf-8") != ""
        clock.advance(minutes=11)
        fake_wg.fail = {"set"}  # the row is deleted, then removing the peer fails
        await pruning.sweep_all(running.context)
        assert await rows(running) == {}
        assert hosts_path.read_text(encoding="utf-8") == ""


async def test_restart_persists_live_handshakes(
    start_app: StartApp, fake_wg: FakeWireGuard, clock: FakeClock, make_config: StartApp
) -> None:
    # Interfaces outlive the process: the start-up sweep meets peers with handshakes.
    config = make_config(prune_timeout="10m")
    async with start_app(config) as running:
        address, key = await register(running)
    clock.advance(minutes=5)
    handshake = int(clock.now.timestamp())
    fake_wg.interfaces["wg_alpha"].handshakes[key] = handshake
    async with start_app(config) as running:
        moment = datetime.fromtimestamp(handshake, UTC)
        assert await rows(running) == {key: (address, None, moment)}
        assert peers(fake_wg) == {key: f"{address}/128"}


async def test_a_pass_holds_no_registration_up_while_it_compares_and_stores(
    start_app: StartApp,
    fake_wg: FakeWireGuard,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a pass compares and stores (the fleet's lock released), a client registers,
    another is renamed and a third leaves: the pass prunes the stale one, takes the new
    peer for no stray, and neither undoes the rename nor restores the peer of the one
    that left (missing from the interface before the pass)."""
    async with start_app(prune_timeout="10m") as running:
        _, stale_key = await register(running)
        clock.advance(minutes=11)
        renamed_address, renamed_key = await register(running)
        left_address, left_key = await register(running)
        del fake_wg.interfaces["wg_alpha"].peers[left_key]  # a peer lost by hand
        comparing, go_on = threading.Event(), threading.Event()
        real_compare = pruning.compare

        def held_compare(*args: Any) -> Any:
            comparing.set()
            assert go_on.wait(10), "the test never let the pass go on"
            return real_compare(*args)

        monkeypatch.setattr(pruning, "compare", held_compare)
        sweep = asyncio.create_task(pruning.sweep_fleet(running.context, "alpha"))
        try:
            assert await asyncio.to_thread(comparing.wait, 10)
            # Each of these needs the fleet's lock: they would time out were it held.
            new_address, new_key = await asyncio.wait_for(register(running), 10)
            await asyncio.wait_for(ping(running, renamed_address, "digger"), 10)
            await asyncio.wait_for(
                leave_fleet(running.context, "alpha", IPv6Address(left_address)), 10
            )
        finally:
            go_on.set()
        report = await asyncio.wait_for(sweep, 10)

        assert report.pruned == 1
        assert report.removed_unknown == 0
        assert report.restored == 0
        assert set(peers(fake_wg)) == {renamed_key, new_key}
        assert set(await rows(running)) == {renamed_key, new_key}
        roster = running.context.roster
        new_member = roster.find("alpha", new_address)
        assert new_member is not None
        assert new_member.public_key == new_key
        renamed = roster.find("alpha", renamed_address)
        assert renamed is not None
        assert renamed.hostname == "digger"
        assert roster.find("alpha", left_address) is None
        assert stale_key not in peers(fake_wg)


async def test_a_registration_goes_through_while_a_pass_reads_the_interface(
    start_app: StartApp, fake_wg: FakeWireGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dump of tens of thousands of peers is read without the fleet's lock: a client
    registers meanwhile, and the pass leaves its peer and its roster entry alone."""
    async with start_app(prune_timeout="10m") as running:
        await register(running)
        wireguard = running.context.wireguard
        real_dump = wireguard.dump
        reading, go_on = asyncio.Event(), asyncio.Event()

        async def held_dump(fleet: str) -> InterfaceDump:
            reading.set()
            await go_on.wait()
            return await real_dump(fleet)

        monkeypatch.setattr(wireguard, "dump", held_dump)
        sweep = asyncio.create_task(pruning.sweep_fleet(running.context, "alpha"))
        try:
            await asyncio.wait_for(reading.wait(), 10)
            new_address, new_key = await asyncio.wait_for(register(running), 10)
        finally:
            go_on.set()
        report = await asyncio.wait_for(sweep, 10)

        assert report.removed_unknown == 0
        assert peers(fake_wg)[new_key] == f"{new_address}/128"
        member = running.context.roster.find("alpha", new_address)
        assert member is not None
        assert member.public_key == new_key

"""Published files that cannot be written are retried at every pass and shown in the
metrics and /health; every background task is started and ended by the lifespan, and
none ends with an exception nobody hears of."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import pruning
from errors import Busy
from registry import _Request
from tasks import report_failure
from tests.conftest import Running

StartApp = Callable[..., AbstractAsyncContextManager[Running]]


def sample(running: Running, name: str, file: str) -> float | None:
    return running.context.metrics.registry.get_sample_value(name, {"file": file})


async def test_a_published_file_that_cannot_be_written_is_retried_at_every_pass(
    start_app: StartApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hosts")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the hosts file's directory should be\n")
    hosts = blocker / "hosts"
    targets = tmp_path / "run" / "targets.json"
    async with start_app(hosts_file=str(hosts), prometheus_targets_file=str(targets)) as running:
        async with running.client() as http:
            answer = (await http.post("/fleet/alpha/register")).json()
        async with running.in_tunnel(answer["address"]) as http:
            named = await http.post("/fleet/alpha/ping", json={"hostname": "excavator"})
        assert named.status_code == 200
        await pruning.sweep_all(running.context)
        async with running.client() as http:
            failing = await http.get("/health")
        assert sample(running, "wg_fleet_file_write_failing", "hosts") == 1
        assert sample(running, "wg_fleet_file_write_failing", "targets") == 0
        assert (sample(running, "wg_fleet_file_write_failures_total", "hosts") or 0) >= 2

        blocker.unlink()  # the operator fixes the disk; nothing else changes
        await pruning.sweep_all(running.context)
        async with running.client() as http:
            passing = await http.get("/health")
        assert sample(running, "wg_fleet_file_write_failing", "hosts") == 0

    assert failing.status_code == 503
    problems = failing.json()["problems"]
    assert len(problems) == 1
    assert problems[0].startswith(f"cannot write {hosts}: ")
    assert passing.json() == {"status": "pass"}
    assert hosts.read_text() == f"{answer['address']} excavator.alpha.fleet.test\n"
    errors = [r for r in caplog.records if r.getMessage().startswith(f"cannot write {hosts}")]
    assert len(errors) == 1  # logged once, not at every retry
    assert f"wrote {hosts} again after failing" in caplog.text


def wg_fleet_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("wg-fleet-") and not task.done()
    ]


async def test_the_lifespan_starts_and_ends_every_background_task(start_app: StartApp) -> None:
    async with start_app(prometheus_targets_file="/dev/null/targets.json") as running:
        registry = running.context.registry
        async with running.client() as http:
            assert (await http.post("/fleet/alpha/register")).status_code == 200
        running.context.publisher.refresh_soon()
        names = {task.get_name() for task in wg_fleet_tasks()}
        assert {"wg-fleet-pruner", "wg-fleet-activity", "wg-fleet-publisher"} <= names
        # A registration still queued when the service stops is answered, not dropped.
        loop = asyncio.get_running_loop()
        hold = asyncio.Event()
        worker = asyncio.create_task(hold.wait(), name="wg-fleet-register-alpha")
        registry._workers["alpha"] = worker
        pending = loop.create_future()
        registry._queues.setdefault("alpha", []).append(_Request("key", "192.0.2.9", pending))
    assert wg_fleet_tasks() == []
    assert worker.cancelled()
    with pytest.raises(Busy):
        pending.result()


async def test_a_background_task_that_fails_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("something nobody expected")

    task = asyncio.create_task(fails(), name="wg-fleet-example")
    task.add_done_callback(report_failure)
    with pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == ["background task wg-fleet-example failed"]
    assert failures[0].exc_info is not None


async def test_start_up_objects_are_frozen_while_the_app_runs(start_app: StartApp) -> None:
    """What start-up built is out of the collector's sight while the app serves (a full
    collection walks only what came since), and handed back when it stops."""
    async with start_app():
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0

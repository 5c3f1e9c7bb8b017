"""The Prometheus targets file and SIGHUP: published files follow the clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pruning
from hosts import render_targets
from tests.conftest import FLEET
from tests.fakes import FakeClock, FakeWireGuard

StartApp = Callable[..., Any]


def test_targets_are_one_group_per_client_sorted_by_address() -> None:
    text = render_targets(
        [("alpha", "fd00::10", None), ("beta", "fd00::9", "excavator")], port=9100
    )
    assert json.loads(text) == [
        {"targets": ["[fd00::9]:9100"], "labels": {"fleet": "beta", "hostname": "excavator"}},
        {"targets": ["[fd00::10]:9100"], "labels": {"fleet": "alpha"}},
    ]


async def test_the_targets_file_follows_registrations_renames_and_prunes(
    start_app: StartApp, tmp_path: Path, clock: FakeClock
) -> None:
    targets = tmp_path / "run" / "targets.json"

    def listed() -> list[Any]:
        return json.loads(targets.read_text()) if targets.exists() else []

    settings = {"prometheus_targets_file": str(targets), "prometheus_target_port": 9200}
    async with start_app(prune_timeout="10m", **settings) as running:
        async with running.client() as http:
            first = (await http.post(f"/fleet/{FLEET}/register")).json()["address"]
            second = (await http.post(f"/fleet/{FLEET}/register")).json()["address"]
        await running.context.publisher.refresh()  # what refresh_soon does a second later
        assert {group["targets"][0] for group in listed()} == {
            f"[{first}]:9200",
            f"[{second}]:9200",
        }
        assert targets.stat().st_mode & 0o777 == 0o644

        clock.advance(minutes=6)
        async with running.in_tunnel(first) as tunnel:
            await tunnel.post(f"/fleet/{FLEET}/ping", json={"hostname": "loader"})
        node = running.context.config.node
        assert {"fleet": FLEET, "hostname": "loader", "node": node} in [
            g["labels"] for g in listed()
        ]

        clock.advance(minutes=6)  # the second client has been silent for 12 minutes
        await pruning.sweep_all(running.context)
        assert [group["targets"] for group in listed()] == [[f"[{first}]:9200"]]


async def test_sighup_reconciles_at_once(start_app: StartApp, fake_wg: FakeWireGuard) -> None:
    async with start_app(prune_interval="1h") as running:
        async with running.client() as http:
            answer = (await http.post(f"/fleet/{FLEET}/register")).json()
        peers = fake_wg.interfaces["wg_alpha"].peers
        peers.clear()
        os.kill(os.getpid(), signal.SIGHUP)
        # The pass runs on the event loop: give it turns while polling.
        for _ in range(200):
            if answer["public_key"] in peers:
                break
            await asyncio.sleep(0.01)
        assert peers == {answer["public_key"]: f"{answer['address']}/128"}

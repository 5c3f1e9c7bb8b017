"""drift.py through the pass: what is repaired, how (bulk, key on stdin), that healthy
peers are left alone, and how each repair is logged, counted and shown by /health.
The fake runner stands in for WireGuard; tests/e2e/test_drift.py breaks a real one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

import pruning
from pruning import SweepReport
from tests.conftest import Running
from tests.fakes import FakeWireGuard
from wireguard import read_private_key

StartApp = Callable[..., AbstractAsyncContextManager[Running]]


async def register(running: Running) -> tuple[str, str]:
    async with running.client() as http:
        response = await http.post("/fleet/alpha/register")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["address"], body["public_key"]


def repairs(running: Running, what: str) -> float:
    value = running.context.metrics.registry.get_sample_value(
        "wg_fleet_repairs_total",
        {"fleet": "alpha", "node": running.context.config.node, "what": what},
    )
    return value or 0.0


async def health(running: Running) -> tuple[int, Any]:
    async with running.client() as http:
        response = await http.get("/health")
    return response.status_code, response.json()


async def test_a_matching_interface_gets_no_repair_at_all(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running:
        await register(running)
        fake_wg.calls.clear()
        await pruning.sweep_all(running.context)
        changes = [
            call
            for call in fake_wg.calls
            if call[:2] in (("wg", "set"), ("wg", "addconf"), ("wg-quick", "up"))
            or call[:3] in (("ip", "link", "set"), ("ip", "-6", "addr"))
        ]
        assert changes == []
        assert (
            running.context.metrics.registry.get_sample_value(
                "wg_fleet_repairs_total",
                {"fleet": "alpha", "node": running.context.config.node, "what": "peers"},
            )
            is None
        )
        assert await health(running) == (200, {"status": "pass"})


async def test_a_link_set_down_gets_its_link_and_its_address_back(
    start_app: StartApp, fake_wg: FakeWireGuard, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_app() as running:
        address, key = await register(running)
        interface = fake_wg.interfaces["wg_alpha"]
        interface.up = False
        interface.addresses.clear()  # what Linux does to IPv6 addresses on link down
        assert await health(running) == (
            503,
            {
                "status": "fail",
                "problems": [
                    "fleet alpha: interface wg_alpha is down",
                    "fleet alpha: interface wg_alpha lacks its address fd00:1::1/64",
                ],
            },
        )
        fake_wg.calls.clear()
        with caplog.at_level(logging.WARNING, logger="drift"):
            report = await pruning.sweep_fleet(running.context, "alpha")
        assert report == SweepReport("alpha", 0, 0, 0, True)
        assert interface.up
        assert interface.addresses == {"fd00:1::1/64"}
        assert interface.peers == {key: f"{address}/128"}
        assert fake_wg.count("ip", "-6", "addr", "add", "fd00:1::1/64", "dev", "wg_alpha") == 1
        assert (repairs(running, "link"), repairs(running, "address")) == (1, 1)
        lines = [r.getMessage() for r in caplog.records if r.name == "drift"]
        assert lines == [
            "interface wg_alpha is down; set it up",
            "interface wg_alpha lacks its address fd00:1::1/64; added it again",
        ]
        assert await health(running) == (200, {"status": "pass"})


async def test_port_and_key_are_set_back_the_key_on_stdin(
    start_app: StartApp, fake_wg: FakeWireGuard, tmp_path: Any
) -> None:
    async with start_app() as running:
        clients = [await register(running) for _ in range(2)]
        interface = fake_wg.interfaces["wg_alpha"]
        configured = interface.private_key
        assert configured is not None
        interface.listen_port = 40000
        interface.private_key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
        running.context.status.store("alpha", await running.context.wireguard.dump("alpha"))
        status, body = await health(running)
        assert status == 503
        assert body["problems"] == [
            "fleet alpha: interface wg_alpha listens on port 40000, not 51820",
            "fleet alpha: interface wg_alpha has another key than its config file",
        ]
        fake_wg.calls.clear()
        fake_wg.stdins.clear()
        await pruning.sweep_fleet(running.context, "alpha")
        assert (interface.listen_port, interface.private_key) == (51820, configured)
        assert configured == read_private_key(
            (tmp_path / "wireguard" / "wg_alpha.conf").read_text()
        )
        assert all(configured not in " ".join(call) for call in fake_wg.calls)
        assert f"{configured}\n" in fake_wg.stdins
        # Healthy peers stay: no peer was removed or added.
        assert interface.peers == {key: f"{address}/128" for address, key in clients}
        assert fake_wg.count("wg", "addconf") == 0
        assert (repairs(running, "port"), repairs(running, "key")) == (1, 1)
        assert await health(running) == (200, {"status": "pass"})


async def test_a_failed_repair_shows_in_health_until_a_pass_succeeds(
    start_app: StartApp, fake_wg: FakeWireGuard
) -> None:
    async with start_app() as running:
        await register(running)
        fake_wg.interfaces["wg_alpha"].peers.clear()
        fake_wg.fail.add("addconf")
        await pruning.sweep_all(running.context)
        status, body = await health(running)
        assert status == 503
        assert body["problems"] == [
            "the last pass over fleet alpha failed (`wg` failed); see the log"
        ]
        fake_wg.fail.clear()
        await pruning.sweep_all(running.context)
        assert await health(running) == (200, {"status": "pass"})
        assert repairs(running, "peers") == 1

"""The client's systemd units: the service joins at boot and leaves at shutdown, the
timer pings through a unit of its own; checked offline with systemd-analyze."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "contrib" / "systemd"
NAMES = ("wg-fleet-client.service", "wg-fleet-client-ping.service", "wg-fleet-client.timer")
AGENT = "/usr/local/bin/wg-fleet-client"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def test_the_service_leaves_the_fleet_when_stopped() -> None:
    service = unit("wg-fleet-client.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["RemainAfterExit"] == "yes"  # active until shutdown, so ExecStop runs then
    assert service["ExecStart"] == f"{AGENT} ping"
    assert service["ExecStop"] == f"{AGENT} down --leave"
    assert unit("wg-fleet-client.service")["Unit"]["After"] == "network-online.target"
    assert unit("wg-fleet-client.service")["Install"]["WantedBy"] == "multi-user.target"


def test_the_timer_pings_through_a_unit_without_exec_stop() -> None:
    assert unit("wg-fleet-client.timer")["Timer"]["Unit"] == "wg-fleet-client-ping.service"
    ping = unit("wg-fleet-client-ping.service")["Service"]
    assert ping["ExecStart"] == f"{AGENT} ping"
    assert "ExecStop" not in ping
    assert "RemainAfterExit" not in ping


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_units_verify_cleanly(tmp_path: Path) -> None:
    agent = tmp_path / "wg-fleet-client"
    agent.write_text("#!/bin/sh\n")
    agent.chmod(0o755)
    for name in NAMES:
        text = (UNITS / name).read_text().replace(AGENT, str(agent))
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in NAMES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""

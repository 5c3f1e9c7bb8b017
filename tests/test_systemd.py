"""The systemd unit, checked offline, and wg-quick's own scope (the install script:
test_install.py; the unit under a booted systemd: e2e/test_deployment.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import FakeWireGuard
from wireguard import WireGuard

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "contrib" / "systemd" / "wg-fleet.service"
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def installed_copy(tmp_path: Path) -> Path:
    """The unit with an ExecStart binary that exists here (systemd-analyze verify checks
    that it does)."""
    text = UNIT.read_text().replace("/opt/wg-fleet/.venv/bin/wg-fleet", sys.executable)
    copy = tmp_path / "wg-fleet.service"
    copy.write_text(text)
    return copy


@needs_systemd_analyze
def test_the_unit_verifies_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_the_unit_scores_at_most_3_0_in_systemd_security(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    print(f"systemd-analyze security exposure: {score.group(1)}")  # noqa: T201 - for the log
    assert float(score.group(1)) <= 3.0


def test_the_unit_keeps_what_the_service_needs() -> None:
    text = UNIT.read_text()
    for line in (
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "ProtectSystem=strict",
        "ReadWritePaths=/etc/wireguard",
        "ReadOnlyPaths=/run",
        "StateDirectory=wg-fleet",
        "RuntimeDirectory=wg-fleet wireguard",
        "LimitCORE=0",
        "RuntimeDirectoryPreserve=yes",
        "DeviceAllow=/dev/net/tun rw",
        "UMask=0077",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text.splitlines()
    assert "AF_NETLINK" in re.search(r"^RestrictAddressFamilies=(.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    assert "--hosts-file /run/wg-fleet/hosts" in text


def test_no_path_the_unit_needs_at_start_is_missing_after_a_boot() -> None:
    """/run is empty after a boot: a path under it that the namespace set-up needs must be
    created by systemd itself (RuntimeDirectory=) or be optional ("-" prefix), or the unit
    fails with 226/NAMESPACE until something else happens to create it."""
    text = UNIT.read_text()
    runtime = re.search(r"^RuntimeDirectory=(.*)$", text, re.M).group(1).split()  # type: ignore[union-attr]
    made = {f"/run/{name}" for name in runtime}
    needed = []
    for setting in ("ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "BindPaths"):
        for value in re.findall(rf"^{setting}=(.*)$", text, re.M):
            needed += [path for path in value.split() if path.startswith("/run/")]
    assert [path for path in needed if path not in made] == []


async def test_under_systemd_wg_quick_gets_a_scope_of_its_own(tmp_path: Path) -> None:
    runner = FakeWireGuard()
    wireguard = WireGuard(runner, tmp_path, own_scope=True)
    await wireguard.bring_up("alpha")
    call = next(call for call in runner.calls if call[0] == "systemd-run")
    assert call[:4] == ("systemd-run", "--scope", "--quiet", "--collect")
    assert call[4].startswith("--unit=wg-fleet-wg_alpha-")
    assert call[5:] == ("--", "wg-quick", "up", str(tmp_path / "wg_alpha.conf"))


async def test_without_a_scope_wg_quick_still_brings_the_interface_up(tmp_path: Path) -> None:
    runner = FakeWireGuard(fail={"systemd-run"})
    wireguard = WireGuard(runner, tmp_path, own_scope=True)
    await wireguard.bring_up("alpha")
    assert "wg_alpha" in runner.interfaces
    assert runner.calls[-1] == ("wg-quick", "up", str(tmp_path / "wg_alpha.conf"))

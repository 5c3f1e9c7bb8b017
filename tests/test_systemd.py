"""The systemd unit, checked offline, the install script, and wg-quick's own scope."""

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
    """The unit as install.sh writes it, pointing at this checkout's interpreter and code
    (systemd-analyze verify checks that ExecStart's binary exists)."""
    text = UNIT.read_text().replace("/opt/wg-fleet/.venv/bin/python", sys.executable)
    text = text.replace("/opt/wg-fleet/main.py", str(REPO / "main.py"))
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
        "ReadWritePaths=/etc/wireguard /run/wireguard",
        "StateDirectory=wg-fleet",
        "RuntimeDirectory=wg-fleet",
        "RuntimeDirectoryPreserve=yes",
        "DeviceAllow=/dev/net/tun rw",
        "UMask=0077",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text.splitlines()
    assert "AF_NETLINK" in re.search(r"^RestrictAddressFamilies=(.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    assert "--hosts-file /run/wg-fleet/hosts" in text


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="install.sh is for Debian")
def test_install_script_installs_and_upgrades_in_place(tmp_path: Path) -> None:
    prefix, config, units = tmp_path / "opt", tmp_path / "wg-fleet.yaml", tmp_path / "units"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PREFIX": str(prefix),
        "CONFIG": str(config),
        "UNIT_DIR": str(units),
        "PYTHON": sys.executable,
        "NO_START": "1",
    }
    run = [str(REPO / "contrib" / "install.sh")]
    first = subprocess.run(run, env=env, capture_output=True, text=True, check=False, timeout=600)
    if first.returncode != 0 and "run it as root" in first.stderr:
        pytest.skip("install.sh needs root")
    assert first.returncode == 0, first.stderr
    assert (prefix / "main.py").exists()
    assert (prefix / ".venv" / "bin" / "python").exists()
    assert config.stat().st_mode & 0o777 == 0o600
    config.write_text(config.read_text() + "# edited by the operator\n")
    (prefix / "stale_module.py").write_text("# from an older release\n")

    second = subprocess.run(run, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert second.returncode == 0, second.stderr
    assert config.read_text().endswith("# edited by the operator\n")  # never overwritten
    assert not (prefix / "stale_module.py").exists()
    unit = (units / "wg-fleet.service").read_text()
    assert f"ExecStart={prefix}/.venv/bin/python {prefix}/main.py --config {config}" in unit
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(units / "wg-fleet.service")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.stdout + verify.stderr == ""


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

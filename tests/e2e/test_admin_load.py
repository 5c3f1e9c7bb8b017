"""Guessing the admin password cannot stall the service (a real wg-fleet process).

50 clients, each from an address of its own, send wrong passwords for 10 s. Meanwhile
/health must answer with a median under 20 ms and registrations must keep at least 80 %
of the rate they had without the attack. The machine is shared, so the unloaded rate is
measured right before and right after the attack, and the two are averaged.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from admin_auth import hash_password
from tests.e2e.harness import HTTP_PORT, Lab, Server, fleet_config, unique

LOAD = Path(__file__).with_name("admin_load.py")
URL = f"http://127.0.0.1:{HTTP_PORT}"
ATTACKERS = 50
ATTACK_SECONDS = 10.0
QUIET_SECONDS = 5.0


def start(lab: Lab, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.server.name, sys.executable, str(LOAD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def measure(lab: Lab, fleet: str, seconds: float) -> dict[str, Any]:
    """Registrations per second and /health latencies, from two processes at once."""
    registering = start(lab, "register", URL, fleet, str(seconds))
    probing = start(lab, "probe", URL, str(seconds))
    result = finish(registering, seconds + 60) | finish(probing, seconds + 60)
    assert result["failed"] == 0, result["failed"]
    return result


def rate(*runs: dict[str, Any]) -> float:
    return sum(float(r["registrations"]) for r in runs) / sum(float(r["seconds"]) for r in runs)


def test_wrong_passwords_do_not_stall_health_or_registrations(lab: Lab) -> None:
    fleet = unique("f")
    password_hash = hash_password("the-real-admin-password")
    server = Server(
        lab,
        {
            "domain": "fleet.test",
            "prune_timeout": "30m",
            "admin": {"username": "admin", "password_hash": password_hash},
            "fleets": {fleet: fleet_config(fleet, 3)},
        },
    )
    server.start()

    before = measure(lab, fleet, QUIET_SECONDS)
    attack = start(lab, "attack", URL, str(ATTACK_SECONDS), str(ATTACKERS))
    try:
        assert attack.stdout is not None
        assert attack.stdout.readline().strip() == "started", attack.stderr
        during = measure(lab, fleet, ATTACK_SECONDS - 1)
    finally:
        statuses = finish(attack, 120)["statuses"]
    after = measure(lab, fleet, QUIET_SECONDS)

    unloaded, loaded = rate(before, after), rate(during)
    health = statistics.median(during["health"])
    quiet_health = statistics.median(before["health"] + after["health"])
    report = (
        f"registrations/s unloaded {unloaded:.1f}, under attack {loaded:.1f}; /health "
        f"median {quiet_health * 1000:.1f} ms unloaded, {health * 1000:.1f} ms under "
        f"attack; attack answers {statuses}"
    )
    print(report)  # noqa: T201 - the figures, for the README
    assert set(statuses) <= {"401", "429"}, report
    assert sum(statuses.values()) >= ATTACKERS, report
    assert health < 0.020, report
    assert loaded >= 0.8 * unloaded, report
    assert "wrong-" not in server.output()  # no password in the log

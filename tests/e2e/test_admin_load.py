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

from admin_auth import hash_password
from tests.e2e.harness import HTTP_PORT, Lab, Server, fleet_config, unique

LOAD = Path(__file__).with_name("admin_load.py")
URL = f"http://127.0.0.1:{HTTP_PORT}"
ATTACKERS = 50
ATTACK_SECONDS = 10.0
QUIET_SECONDS = 5.0


def measure(lab: Lab, fleet: str, seconds: float) -> dict[str, float | list[float]]:
    out = lab.server.run(
        sys.executable, str(LOAD), "measure", URL, fleet, str(seconds), timeout=seconds + 60
    )
    result: dict[str, float | list[float]] = json.loads(out)
    assert result["failed"] == 0, result["failed"]
    return result


def rate(*runs: dict[str, float | list[float]]) -> float:
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
    attack = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.server.name,
            sys.executable,
            str(LOAD),
            "attack",
            URL,
            str(ATTACK_SECONDS),
            str(ATTACKERS),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert attack.stdout is not None
        assert attack.stdout.readline().strip() == "started", attack.stderr
        during = measure(lab, fleet, ATTACK_SECONDS - 1)
        out, _ = attack.communicate(timeout=120)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait()
    after = measure(lab, fleet, QUIET_SECONDS)
    statuses = json.loads(out)["statuses"]

    unloaded, loaded = rate(before, after), rate(during)
    health = statistics.median(during["health"])  # type: ignore[arg-type]
    report = (
        f"registrations/s unloaded {unloaded:.1f}, under attack {loaded:.1f}; "
        f"/health median {health * 1000:.1f} ms; attack answers {statuses}"
    )
    print(report)  # noqa: T201 - the figures, for the README
    assert set(statuses) <= {"401", "429"}, report
    assert sum(statuses.values()) >= ATTACKERS, report
    assert health < 0.020, report
    assert loaded >= 0.8 * unloaded, report
    assert "wrong-" not in server.output()  # no password in the log

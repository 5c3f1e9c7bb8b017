"""Events, signed webhooks and bans over real wireguard-go tunnels: a receiver in its own
namespace checks signatures and order through 500s and a `kill -9` of wg-fleet."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from admin_auth import hash_password
from tests.e2e.harness import Lab, Namespace, Server, fleet_config, unique, wait_for
from tests.e2e.test_client_agent import SERVER_URL, agent, public_key, succeeded
from tests.e2e.test_lifecycle import join, ping

SECRET = "e2e-webhook-secret-0123456789"
RECEIVER = Path(__file__).resolve().parent / "receiver.py"
PASSWORD = "e2e admin password"


class Receiver:
    def __init__(self, lab: Lab) -> None:
        self.namespace, number = lab.host("r")
        self.url = f"http://198.18.0.{number}:9000/hook"
        self.log = lab.workdir / f"{self.namespace.name}.jsonl"
        self.control = lab.workdir / f"{self.namespace.name}-control"
        self.control.mkdir()
        self.log.touch()
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace.name, sys.executable, str(RECEIVER),
             f"198.18.0.{number}", "9000", SECRET, str(self.log), str(self.control)],
        )  # fmt: skip
        wait_for(lambda: self.namespace.ok("sh", "-c", "ss -ltn | grep -q :9000"), 10,
                 "the receiver to listen")  # fmt: skip

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def delivered(self) -> list[dict[str, Any]]:
        return [
            r["event"] for r in self.records() if r["phase"] == "answered" and r["status"] == 200
        ]

    def set(self, flag: str, on: bool) -> None:
        path = self.control / flag
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)


@pytest.fixture
def receiver(lab: Lab) -> Iterator[Receiver]:
    made = Receiver(lab)
    try:
        yield made
    finally:
        made.process.kill()
        made.process.wait(timeout=10)


def stored_events(server: Server, fleet: str) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{server.database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id, type FROM events WHERE fleet = ? ORDER BY id", (fleet,))
        return [(id_, kind) for id_, kind in rows]


def in_order_once(events: list[dict[str, Any]]) -> list[int]:
    """The ids in the order first delivered; asserts no id first arrives after a newer one."""
    seen: list[int] = []
    for event in events:
        if event["id"] not in seen:
            assert not seen or event["id"] > seen[-1], f"{event['id']} after {seen[-1]}"
            seen.append(event["id"])
    return seen


def test_a_client_life_reaches_a_receiver_signed_in_order_through_500s_and_kill_9(
    lab: Lab, receiver: Receiver
) -> None:
    fleet = unique("f")
    settings = fleet_config(fleet, 7)
    config = {
        "domain": "fleet.test",
        "prune_timeout": "12s",
        "prune_interval": "1s",
        "fleets": {fleet: settings},
        "webhooks": [{"url": receiver.url, "secret": SECRET}],
    }
    server = Server(lab, config)
    receiver.set("fail", True)  # the receiver answers 500 for a while
    server.start()
    client, body = join(lab, fleet, settings)
    status, answer = ping(client, fleet, settings, {"hostname": "excavator"})
    assert (status, answer["hostname"]) == (200, "excavator")
    wait_for(lambda: len(receiver.records()) >= 4, 30, "a few refused deliveries")
    assert receiver.delivered() == []
    receiver.set("fail", False)
    wait_for(lambda: len(receiver.delivered()) >= 3, 60, "the events after the 500s")

    # A delivery in flight when wg-fleet is killed is sent again after the restart.
    receiver.set("slow", True)
    client.down()  # goes quiet: pruned after prune_timeout
    wait_for(
        lambda: any(r["event"]["type"] == "pruned" and r["phase"] == "arrived"
                    for r in receiver.records()),
        60, "the pruned event to be in flight",
    )  # fmt: skip
    server.stop(signal.SIGKILL)
    receiver.set("slow", False)
    server.start()
    wait_for(
        lambda: "pruned" in [e["type"] for e in receiver.delivered()], 60,
        "the pruned event delivered after the restart",
    )  # fmt: skip

    records = receiver.records()
    assert all(r["valid"] for r in records), "a signature did not verify"
    assert all(r["delivery"] == str(r["event"]["id"]) for r in records)
    assert all(r["type_header"] == r["event"]["type"] for r in records)
    ids = in_order_once([r["event"] for r in records])
    assert ids == [id_ for id_, _ in stored_events(server, fleet)]  # each one, none invented
    kinds = [e["type"] for e in receiver.delivered()]
    first = {kind: kinds.index(kind) for kind in set(kinds)}
    assert kinds[0] == "registered"
    assert set(kinds) == {"registered", "renamed", "online", "pruned"}
    assert first["pruned"] == max(first.values())
    pruned = next(e for e in receiver.delivered() if e["type"] == "pruned")
    assert pruned["detail"] == {"reason": "inactive"}
    assert (pruned["address"], pruned["hostname"]) == (body["address"], "excavator")
    renamed = next(e for e in receiver.delivered() if e["type"] == "renamed")
    assert renamed["detail"] == {"from": None, "to": "excavator"}
    assert "offline" not in kinds  # pruned only, no offline invented before it


def basic() -> dict[str, str]:
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_a_ban_stops_the_agents_re_registration(lab: Lab) -> None:
    fleet = unique("f")
    config = {
        "domain": "fleet.test",
        "prune_timeout": "30m",
        "admin": {"username": "admin", "password_hash": hash_password(PASSWORD)},
        "fleets": {fleet: fleet_config(fleet, 8)},
    }
    server = Server(lab, config)
    server.start()
    client = lab.client()
    succeeded(agent(client, "up", "--server", SERVER_URL, "--fleet", fleet))
    key = public_key(client)
    [address] = [allowed.split("/")[0] for allowed in server.peers(fleet).values()]
    server_ns: Namespace = server.namespace
    status, answer = server_ns.http(
        "DELETE",
        f"http://[::1]:8000/api/fleets/{fleet}/clients/{address}?ban=true",
        headers=basic(),
    )
    assert (status, answer) == (200, {"status": "removed"})
    assert key not in server.peers(fleet)

    result = agent(client, "ping")  # no answer through the tunnel: it tries to register
    assert result.returncode != 0
    assert "banned" in result.stderr, result.stderr
    assert key not in server.peers(fleet)
    status, bans = server_ns.http("GET", "http://[::1]:8000/api/bans", headers=basic())
    assert [ban["public_key"] for ban in bans["bans"]] == [key]

    # Lifted, the same agent comes back with the same key.
    status, _ = server_ns.http(
        "DELETE", f"http://[::1]:8000/api/bans?public_key={key.replace('+', '%2B')}",
        headers=basic(),
    )  # fmt: skip
    assert status == 200
    succeeded(agent(client, "ping"))
    assert key in server.peers(fleet)

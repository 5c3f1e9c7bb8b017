"""No private key leaks from the real service: not into any process's argv (sampled from
/proc while it works), its debug log, its database files, its answers or /metrics; and
its secret files and directories are private."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from command import KEY_SHAPED
from tests.e2e.harness import Lab, Server, fleet_config, unique, wait_for
from tests.e2e.test_resilience import Burst, join, ping_url, stored
from wireguard import read_private_key


@dataclass
class ProcessSampler:
    """Reads /proc/*/cmdline over and over in a thread; keeps every distinct argv, and
    separately those of processes in the given network namespaces."""

    namespaces: set[int]
    everything: set[str] = field(default_factory=set)
    ours: set[str] = field(default_factory=set)
    passes: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    argv = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
                    text = argv.decode("utf-8", "replace").strip()
                    if not text:
                        continue
                    self.everything.add(text)
                    if os.stat(Path(entry.path, "ns", "net")).st_ino in self.namespaces:
                        self.ours.add(text)
            self.passes += 1


@contextlib.contextmanager
def sampling(lab: Lab) -> Iterator[ProcessSampler]:
    inodes = {os.stat(f"/run/netns/{namespace.name}").st_ino for namespace in lab.namespaces}
    sampler = ProcessSampler(inodes)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler.stop.set()
        thread.join(timeout=10)


def leaks(data: str | bytes, secrets: dict[str, str]) -> list[str]:
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return sorted(name for name, key in secrets.items() if key.encode() in raw)


def private_key_of(config: str) -> str:
    match = re.search(r"^PrivateKey = (\S+)$", config, re.MULTILINE)
    assert match is not None, config
    return match.group(1)


def test_no_private_key_leaks_from_the_running_service(lab: Lab, tmp_path: Path) -> None:
    fleet = unique("f")
    settings = fleet_config(fleet, 5)
    server = Server(
        lab,
        {
            "domain": "fleet.test",
            "prune_timeout": "5s",
            "prune_interval": "1s",
            "fleets": {fleet: settings},
        },
    )
    # Directories the service must create itself, privately.
    state = server.state / "private-state"
    wireguard_dir = server.state / "private-wireguard"
    server.database = state / "clients.db"
    server.config |= {"database": str(server.database), "wireguard_dir": str(wireguard_dir)}
    member = lab.client()
    sender = lab.client()
    secrets: dict[str, str] = {}
    public: set[str] = set()
    answers: list[str] = []  # every body the service answered, but registrations
    registrations: list[str] = []

    with sampling(lab) as sampler:
        server.start()
        interface_config = (wireguard_dir / f"wg_{fleet}.conf").read_text()
        server_key = read_private_key(interface_config)
        assert server_key is not None
        secrets["the server's key"] = server_key

        joined = join(member, fleet, settings)
        secrets["the member's key"] = private_key_of(joined["config"])
        registrations.append(json.dumps(joined))
        status, body = member.namespace.http(
            "POST", ping_url(settings, fleet), {"hostname": "member"}
        )
        assert status == 200, body
        for number in range(3):  # clients that keep their own key
            private = sender.namespace.run("wg", "genkey").strip()
            own_public = sender.namespace.run("wg", "pubkey", stdin=private).strip()
            secrets[f"own key {number}"] = private
            status, body = sender.register(fleet, {"public_key": own_public})
            assert status == 200, body
            registrations.append(json.dumps(body))
        burst = Burst.start(sender.namespace, fleet, 60, 12, tmp_path / "burst.jsonl")
        results = burst.finish()
        assert [r["status"] for r in results] == [200] * 60, results
        for result in results:
            registrations.append(result["body"])
            secrets[f"burst key {result['i']}"] = private_key_of(
                json.loads(result["body"])["config"]
            )
        status, body = member.namespace.http("POST", ping_url(settings, fleet), {})
        assert status == 200, body
        public |= {json.loads(text)["public_key"] for text in registrations}
        public.add(json.loads(registrations[0])["config"].split("PublicKey = ")[1].split()[0])

        def read_everything() -> None:
            for path in (
                "/",
                f"/fleet/{fleet}",
                f"/fleet/{fleet}?sort=activity",
                "/api/fleets",
                f"/api/fleets/{fleet}/clients?limit=1000",
                "/metrics",
                "/health",
                "/fleet/nope",
            ):
                status, body = server.api("GET", path)
                assert status in (200, 404), (path, status)
                answers.append(body if isinstance(body, str) else json.dumps(body))

        read_everything()
        database_while_running = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}
        # The silent clients are pruned; the pinging member stays.
        wait_for(
            lambda: (
                member.namespace.http("POST", ping_url(settings, fleet), {})[0] == 200
                and stored(server, fleet).keys() == {joined["public_key"]}
            ),
            30,
            "the silent clients to be pruned",
            interval=0.5,
        )
        read_everything()
        assert server.stop(signal.SIGTERM) == 0
    database_after = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}
    log = server.output()

    assert sampler.passes >= 10
    assert any("main.py" in argv for argv in sampler.ours)  # it saw the service itself
    assert {name for argv in sampler.everything for name in leaks(argv, secrets)} == set()
    strays = {key for argv in sampler.ours for key in KEY_SHAPED.findall(argv)} - public
    assert strays == set()
    assert "DEBUG" in log
    # Commands are logged at debug (pruning ran `wg set … remove` with public keys);
    # registrations added their peers over wireguard-go's socket, also logged.
    assert "ran wg set" in log
    assert "peer(s) over /var/run/wireguard/" in log
    assert leaks(log, secrets) == []
    assert set(KEY_SHAPED.findall(log)) - public == set()
    assert "clients.db" in database_while_running
    for name, data in {**database_while_running, **database_after}.items():
        assert leaks(data, secrets) == [], name
    assert [leaks(text, secrets) for text in answers if leaks(text, secrets)] == []
    for text in registrations:  # each holds at most its own generated key
        assert len(leaks(text, secrets)) <= 1
    assert leaks(server.hosts_file.read_bytes(), secrets) == []

    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("clients.db", "clients.db-wal", "clients.db-shm"):
        if (state / name).exists():
            assert (state / name).stat().st_mode & 0o777 == 0o600, name
    assert wireguard_dir.stat().st_mode & 0o777 == 0o700
    assert (wireguard_dir / f"wg_{fleet}.conf").stat().st_mode & 0o777 == 0o600
    # wg-quick reads the config; the key reached the interface, not any argv.
    assert lab.server.ok("wg", "show", f"wg_{fleet}")
    shown = subprocess.run(
        ["ip", "netns", "exec", lab.server.name, "wg", "show", f"wg_{fleet}", "private-key"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert shown == server_key

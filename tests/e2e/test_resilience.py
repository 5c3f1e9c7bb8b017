"""Crashes, SIGTERM under load, bursts of registrations and pings racing the pruner,
against the real service over real wireguard-go tunnels.

Load comes from small Python scripts run inside client namespaces (the standard
library only), which print one JSON line per request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import (
    HTTP_PORT,
    SERVER_V4,
    Client,
    Lab,
    Namespace,
    Server,
    fleet_config,
    unique,
    wait_for,
)

# Sends `count` POSTs to http://host:port/path from `workers` threads that start together
# (a barrier); prints {"i", "status", "body"} or {"i", "status": 0, "error"} per request.
BURST = r"""
import http.client, json, sys, threading
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count, workers = int(sys.argv[4]), int(sys.argv[5])
body = sys.argv[6] if len(sys.argv) > 6 else None
lock = threading.Lock()
start = threading.Barrier(workers)
taken = 0

def post(i):
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return {"i": i, "status": response.status, "body": response.read().decode()}
    except Exception as error:
        return {"i": i, "status": 0, "error": f"{type(error).__name__}: {error}"}
    finally:
        connection.close()

def work():
    global taken
    start.wait()
    while True:
        with lock:
            i, taken = taken, taken + 1
        if i >= count:
            return
        result = post(i)
        with lock:
            print(json.dumps(result), flush=True)

threads = [threading.Thread(target=work) for _ in range(workers)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""

# Pings http://[host]:port/path every `interval` seconds until the file `stop` exists;
# prints {"t", "status", "body"} per ping (t: seconds since the start).
PING_LOOP = r"""
import http.client, json, os, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
stop, interval = sys.argv[4], float(sys.argv[5])
started = time.monotonic()
while not os.path.exists(stop):
    sent = time.monotonic()
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("POST", path, body="{}", headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        result = {"status": response.status, "body": response.read().decode()}
    except Exception as error:
        result = {"status": 0, "error": f"{type(error).__name__}: {error}"}
    finally:
        connection.close()
    result["t"] = round(sent - started, 3)
    print(json.dumps(result), flush=True)
    time.sleep(max(0.0, interval - (time.monotonic() - sent)))
"""

# Opens one connection per request of the JSON list on its first stdin line, sends the
# headers and half of each body, prints "ready", waits for a line on stdin, sends the
# rest, and prints a JSON list of {"status", "body"} or {"status": 0, "error"}.
HELD_REQUESTS = r"""
import json, socket, sys
requests = json.loads(sys.stdin.readline())
held = []
for request in requests:
    body = request["body"].encode()
    half = len(body) // 2
    connection = socket.create_connection((request["host"], request["port"]), timeout=30)
    host = f"[{request['host']}]" if ":" in request["host"] else request["host"]
    head = (
        f"POST {request['path']} HTTP/1.1\r\nHost: {host}:{request['port']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    connection.sendall(head + body[:half])
    held.append((connection, body[half:]))
print("ready", flush=True)
sys.stdin.readline()
results = []
for connection, rest in held:
    try:
        connection.sendall(rest)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        results.append({"status": int(head.split()[1]), "body": payload.decode()})
    except (OSError, IndexError, ValueError) as error:
        results.append({"status": 0, "error": repr(error)})
print(json.dumps(results), flush=True)
"""


def script(namespace: Namespace, source: str, *args: object, **popen: Any) -> subprocess.Popen[str]:
    """Run a Python script inside `namespace`."""
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace.name, sys.executable, "-c", source, *map(str, args)],
        text=True,
        **popen,
    )


@dataclass
class Burst:
    """A BURST script running in the background, its output going to a file."""

    process: subprocess.Popen[str]
    output: Path

    @classmethod
    def start(
        cls, namespace: Namespace, fleet: str, count: int, workers: int, output: Path
    ) -> Burst:
        handle = output.open("w")
        try:
            process = script(
                namespace,
                BURST,
                SERVER_V4,
                HTTP_PORT,
                f"/fleet/{fleet}/register",
                count,
                workers,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        finally:
            handle.close()
        return cls(process, output)

    def results(self) -> list[dict[str, Any]]:
        lines = self.output.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def finish(self, timeout: float = 90) -> list[dict[str, Any]]:
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        return self.results()


def start_server(lab: Lab, number: int, **overrides: Any) -> tuple[Server, str, dict[str, Any]]:
    fleet = unique("f")
    settings = fleet_config(fleet, number)
    config = {"domain": "fleet.test", "prune_timeout": "30m", "fleets": {fleet: settings}}
    config.update(overrides)
    server = Server(lab, config)
    server.start()
    return server, fleet, settings


def stored(server: Server, fleet: str) -> dict[str, str]:
    """Public key → address of the fleet's rows, read from the database file."""
    with contextlib.closing(
        sqlite3.connect(f"file:{server.database}?mode=ro", uri=True, timeout=10)
    ) as db:
        rows = db.execute("SELECT public_key, address FROM clients WHERE fleet = ?", (fleet,))
        return dict(rows.fetchall())


def peers_as_rows(server: Server, fleet: str) -> dict[str, str]:
    """Public key → address of the interface's peers (each must be one /128)."""
    peers = server.peers(fleet)
    assert all(allowed.endswith("/128") and "," not in allowed for allowed in peers.values())
    return {key: allowed.removesuffix("/128") for key, allowed in peers.items()}


def successes(results: list[dict[str, Any]]) -> dict[str, str]:
    """Public key → address of the registrations answered 200."""
    answers = [json.loads(result["body"]) for result in results if result["status"] == 200]
    return {answer["public_key"]: answer["address"] for answer in answers}


def integrity(server: Server) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{server.database}?mode=ro", uri=True)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def ping_url(settings: dict[str, Any], fleet: str) -> str:
    return f"http://[{settings['ip6']}]:{HTTP_PORT}/fleet/{fleet}/ping"


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def join(client: Client, fleet: str, settings: dict[str, Any]) -> dict[str, Any]:
    status, body = client.register(fleet)
    assert status == 200, body
    client.up(body["config"])
    assert client.can_ping(settings["ip6"])
    return dict(body)


def test_kill_9_in_a_burst_of_registrations_loses_nothing(lab: Lab, tmp_path: Path) -> None:
    server, fleet, _ = start_server(lab, 1)
    sender = lab.client()
    burst = Burst.start(sender.namespace, fleet, 200, 32, tmp_path / "burst.jsonl")
    wait_for(lambda: len(burst.results()) >= 30, 30, "the first 30 answers", interval=0.01)
    assert server.process is not None
    server.process.kill()  # SIGKILL, in the middle of the burst
    server.process.wait(timeout=10)
    server.process = None
    results = burst.finish()
    answered = successes(results)

    assert 30 <= len(answered) < 200, "the kill did not land in the middle of the burst"
    assert lab.server.ok("ip", "link", "show", f"wg_{fleet}")  # the interface outlives it
    server.start()
    status, health = server.api("GET", "/health")
    assert (status, health) == (200, {"status": "pass"})
    assert server.stop(signal.SIGTERM) == 0

    rows, peers = stored(server, fleet), peers_as_rows(server, fleet)
    assert rows == peers  # exactly the same clients, at the same addresses
    assert answered.items() <= rows.items()  # nothing that was answered 200 is lost
    assert len(set(rows.values())) == len(rows)
    assert integrity(server) == "ok"
    output = server.output()
    assert "Traceback" not in output, output[-3000:]


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(lab: Lab, tmp_path: Path) -> None:
    server, fleet, settings = start_server(lab, 2, prune_interval="1s")
    member, other = lab.client(), lab.client()
    joined = join(member, fleet, settings)
    register = {"host": SERVER_V4, "port": HTTP_PORT, "path": f"/fleet/{fleet}/register"}
    held = [
        {**register, "body": "{}"},
        {**register, "body": json.dumps({"public_key": None})},
        {**register, "body": '{"public_key": null}          '},
        {
            "host": settings["ip6"],
            "port": HTTP_PORT,
            "path": f"/fleet/{fleet}/ping",
            "body": json.dumps({"hostname": "stayer"}),
        },
    ]
    errors = (tmp_path / "helper.err").open("w")
    helper = script(
        member.namespace,
        HELD_REQUESTS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
    )
    errors.close()
    with helper:
        assert helper.stdin is not None
        assert helper.stdout is not None
        helper.stdin.write(json.dumps(held) + "\n")
        helper.stdin.flush()
        ready = helper.stdout.readline().strip()
        assert ready == "ready", (tmp_path / "helper.err").read_text()
        # A burst from elsewhere keeps the server busy while the signal arrives.
        burst = Burst.start(other.namespace, fleet, 150, 16, tmp_path / "burst.jsonl")
        wait_for(lambda: len(burst.results()) >= 10, 30, "the burst to be under way", 0.01)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGTERM)
        wait_for(
            lambda: "Waiting for connections to close" in server.output(),
            10,
            "uvicorn to wait for the requests in flight",
            interval=0.05,
        )
        # No new connection is accepted any more; the held ones are still being served.
        refused, _ = member.register(fleet)
        assert refused == 0
        helper.stdin.write("go\n")
        helper.stdin.flush()
        finished = json.loads(helper.stdout.readline())
        code = server.process.wait(timeout=30)
        server.process = None
        burst_results = burst.finish()

    assert [result["status"] for result in finished] == [200, 200, 200, 200], finished
    assert json.loads(finished[3]["body"])["hostname"] == "stayer"
    assert code == 0
    output = server.output()
    assert "Traceback" not in output, output[-3000:]
    assert "Finished server process" in output
    # The interface and the tunnels stay up.
    assert lab.server.ok("ip", "link", "show", f"wg_{fleet}")
    assert member.can_ping(settings["ip6"], timeout=10)
    # No 5xx in the burst; whatever was answered 200 is stored and on the interface.
    assert not [r for r in burst_results if r["status"] >= 500], burst_results
    rows, peers = stored(server, fleet), peers_as_rows(server, fleet)
    held_answers = successes(finished[:3])
    assert len(held_answers) == 3
    assert (held_answers | successes(burst_results)).items() <= rows.items()
    assert rows == peers
    assert joined["public_key"] in rows
    assert integrity(server) == "ok"


def test_hundreds_of_simultaneous_registrations_get_distinct_working_addresses(
    lab: Lab, tmp_path: Path
) -> None:
    server, fleet, settings = start_server(lab, 3)
    senders = [lab.client() for _ in range(3)]
    bursts = [
        Burst.start(sender.namespace, fleet, 100, 100, tmp_path / f"burst{number}.jsonl")
        for number, sender in enumerate(senders)
    ]
    results = [burst.finish() for burst in bursts]

    statuses = [r["status"] for part in results for r in part]
    assert statuses == [200] * 300, [r for part in results for r in part if r["status"] != 200]
    answers = [json.loads(r["body"]) for part in results for r in part]
    addresses = [ipaddress.IPv6Address(answer["address"]) for answer in answers]
    subnet = ipaddress.IPv6Network(settings["subnet"])
    assert len(set(addresses)) == 300
    assert all(address in subnet for address in addresses)
    assert ipaddress.IPv6Address(settings["ip6"]) not in addresses
    registered = {answer["public_key"]: answer["address"] for answer in answers}
    assert len(registered) == 300
    assert stored(server, fleet) == registered
    assert peers_as_rows(server, fleet) == registered

    # One client of each sender brings its tunnel up and is known by its address.
    for sender, part in zip(senders, results, strict=True):
        answer = json.loads(part[len(part) // 2]["body"])
        sender.up(answer["config"])
        assert sender.can_ping(settings["ip6"])
        status, body = sender.namespace.http("POST", ping_url(settings, fleet), {})
        assert status == 200, body
    assert integrity(server) == "ok"


@dataclass
class Watch:
    """Samples the database and the interface until stopped; remembers what it saw."""

    server: Server
    fleet: str
    samples: list[tuple[float, dict[str, str], dict[str, str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rows = stored(self.server, self.fleet)
                peers = peers_as_rows(self.server, self.fleet)
            except (sqlite3.Error, AssertionError) as error:
                self.errors.append(repr(error))
                continue
            self.samples.append((time.monotonic(), rows, peers))
            self.stop.wait(0.05)


@contextlib.contextmanager
def watching(server: Server, fleet: str) -> Iterator[Watch]:
    watch = Watch(server, fleet)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        watch.stop.set()
        thread.join(timeout=10)


def prune_passes(server: Server) -> int:
    status, text = server.api("GET", "/metrics")
    assert status == 200, text
    prefix = "wg_fleet_prune_duration_seconds_count "
    return int(
        float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :])
    )


def test_pings_racing_the_pruner_never_lose_or_resurrect_a_client(lab: Lab, tmp_path: Path) -> None:
    server, fleet, settings = start_server(lab, 4, prune_timeout="3s", prune_interval="1s")
    stop_file = tmp_path / "stop pinging"
    pinging: set[str] = set()
    with contextlib.ExitStack() as stack:
        loops = []
        # All namespaces first: a port joining the lab's bridge changes the bridge's MAC
        # address, which stalls the tunnels already carrying traffic for seconds.
        clients = [lab.client() for _ in range(4)]
        for client in clients[:3]:
            pinging.add(join(client, fleet, settings)["public_key"])
            loop = script(
                client.namespace,
                PING_LOOP,
                settings["ip6"],
                HTTP_PORT,
                f"/fleet/{fleet}/ping",
                stop_file,
                0.2,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            stack.enter_context(loop)
            stack.callback(stop, loop)
            loops.append((client, loop))
        # The quitter pings a few times, then goes quiet with its tunnel still up.
        quitter = clients[3]
        quitter_key = join(quitter, fleet, settings)["public_key"]
        for _ in range(3):
            status, _ = quitter.namespace.http("POST", ping_url(settings, fleet), {})
            assert status == 200
        silent: set[str] = set()
        for _ in range(20):
            status, body = quitter.register(fleet)  # never used, never pinged
            assert status == 200, body
            silent.add(body["public_key"])

        with watching(server, fleet) as watch:
            wait_for(
                lambda: not (silent | {quitter_key}) & stored(server, fleet).keys(),
                20,
                "the quiet clients to be pruned",
            )
            passes = prune_passes(server)
            wait_for(lambda: prune_passes(server) >= passes + 5, 20, "five more passes")
            # Its peer is gone: the tunnel no longer reaches the server at all.
            assert not quitter.namespace.ok("ping", "-6", "-c", "1", "-W", "1", settings["ip6"])
        stop_file.touch()
        outputs = [loop.communicate(timeout=30) for _, loop in loops]

    pings = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    assert len(pings) >= 3 * 20, outputs
    assert [p for p in pings if p["status"] != 200] == []
    assert watch.errors == []
    assert len(watch.samples) >= 20
    gone_at: dict[str, float] = {}
    for moment, rows, peers in watch.samples:
        assert pinging <= rows.keys(), "a pinging client was pruned"
        assert pinging <= peers.keys(), "a pinging client lost its peer"
        for key in silent | {quitter_key}:
            if key not in rows and key not in peers:
                gone_at.setdefault(key, moment)
            elif key in gone_at:
                raise AssertionError(f"{key} came back after being pruned")
    assert gone_at.keys() == silent | {quitter_key}
    rows = stored(server, fleet)
    assert rows.keys() == pinging
    assert peers_as_rows(server, fleet) == rows
    for client, _ in loops:
        assert client.can_ping(settings["ip6"], timeout=10)

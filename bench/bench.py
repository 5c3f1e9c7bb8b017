"""wg-fleet's benchmark: throughput against a hello-world baseline, then cost at scale.

Run it through `sudo bench/run [--quick]`, which installs what it needs first. Everything
runs in network namespaces made here (the end-to-end tests' harness) and is removed at
the end; traffic never leaves them.

Throughput (32 connections, 2 wrk threads, a short warm-up, then `--seconds` per run):
  register  POST /fleet/<f>/register, no body, over the LAN: each request a new client
  ping      POST /fleet/<f>/ping, body {}, from a client *through its WireGuard tunnel*
            to the fleet's ip6 — the baseline (listening on `::` in the same namespace)
            is reached through the very same tunnel.
  baseline  bench/baseline.py, a hello-world FastAPI app, served by the plain `uvicorn`
            command with default settings (`uvicorn baseline:app --host H --port 8001`,
            once on 0.0.0.0 and once on `::`); nothing shared with wg-fleet's serving
            path. Its own p50 is reported, and no ratio is printed when its p50 over the
            LAN exceeds 10 ms: a sick baseline makes every ratio a lie.
  --profile DIR: then py-spy samples wg-fleet during one more register and ping run,
                 after the first repetition.

Scale (N seeded clients, each with a real key, an address and a hostname):
  phase A, prune_interval 1h (no pass interferes):
    start-up   from process start until /health answers 200 and the interface, absent
               before start, holds all N peers again (all restored by the start-up pass)
    fleet page GET /fleet/<f> with curl in the server namespace (`%{time_total}`): the
               median of 5 requests after a first one, which is reported on its own
               (it finds the 5-second `wg show` cache cold)
    hosts      a real client pings a new hostname through its tunnel; time from sending
               the ping until the hosts file holds the new name
    (also, in this process: hosts.render_hosts + files.write_if_changed over N names)
  phase B, prune_interval 1s, prune_timeout 2s; the seeded rows are active a day in the
  future, so nothing is pruned until 10% of them are aged (a short timeout because the
  service counts its own start as activity: rows can only be pruned prune_timeout after it)
    prune      per-pass durations from the `wg_fleet_prune_duration_seconds` histogram:
               /metrics is scraped every 0.5 s; a scrape interval in which the count
               grew by exactly one gives that pass's duration as the growth of the sum
               (passes are ≥ 1 s apart, so that is the usual case). "empty" is the second
               pass after start-up; "remove 10%" is the pass in which
               `wg_fleet_pruned_total` grows by N/10 after 10% of the rows were made old.
  peak RSS     VmHWM of the python process (not wireguard-go), the larger of A and B.

Database: an SQLite file by default. With --postgres, wg-fleet's `database` is a fresh
database on a PostgreSQL cluster started for the run and removed at the end (see
backends.py); the scale section is then skipped unless --sizes is given, and runs on
PostgreSQL when it is. The table's title names the backend.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import delete, insert, select, text, update

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import profiles
from backends import Backend, PostgresBackend, SQLiteBackend
from report import ScaleRun, report

from config import FleetConfig
from database import Client, make_engine
from files import write_if_changed
from hosts import render_hosts
from migrations import upgrade
from tests.e2e import harness
from tests.e2e.harness import (
    SERVER_V4,
    Lab,
    Namespace,
    fleet_config,
    unique,
    wait_for,
)
from wireguard import generate_keypair, render_server_config

REPO = Path(__file__).resolve().parents[1]
DOMAIN = "bench.internal"
FLEET_PORT = 8000
BASELINE_PORT = 8001
SCALE_PORT = 8002
CONNECTIONS = 32
THREADS = 2
WARMUP_SECONDS = 2
LUA = REPO / "bench" / "post.lua"
PROFILE_SECONDS = 10


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def in_ns(namespace: Namespace, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", namespace.name, *argv]


# ---------------------------------------------------------------- processes


class Service:
    """A Python server (wg-fleet or the baseline) in the server namespace, in its own group."""

    def __init__(self, lab: Lab, argv: list[str], log_path: Path, cwd: Path = REPO) -> None:
        self.lab = lab
        self.argv = argv
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        lab.servers.append(self)  # type: ignore[arg-type]  # Lab.close kills .process

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.started = time.monotonic()
            # `ip netns exec` execs the command: the pid is python's own.
            self.process = subprocess.Popen(
                in_ns(self.lab.server, *self.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.cwd,
            )

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(self.argv)} exited {self.process.returncode}:\n{tail}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and of its children it has waited for."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        # After the command: state is field 3; utime, stime, cutime, cstime are 14–17.
        return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        assert match, "no VmHWM"
        return int(match.group(1)) / 1024

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


def curl(
    namespace: Namespace,
    url: str,
    *,
    method: str = "GET",
    body: str | None = None,
    timeout: float = 60,
) -> tuple[int, str, float]:
    """(HTTP status or 0, body, curl's time_total in seconds) for one request from `namespace`."""
    argv = ["curl", "-sS", "-m", str(timeout), "-X", method, "-w", "\n%{http_code} %{time_total}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", body]
    result = subprocess.run(
        in_ns(namespace, *argv, url), capture_output=True, text=True, timeout=timeout + 10
    )
    if result.returncode != 0:
        return 0, result.stderr, 0.0
    text, _, tail = result.stdout.rpartition("\n")
    status, seconds = tail.split()
    return int(status), text, float(seconds)


def wait_answering(namespace: Namespace, service: Service, url: str, timeout: float) -> float:
    """Seconds from `service.start()` until `url` answers 200 (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        service.check_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")
        # Once the socket is bound a request waits in the backlog until start-up is over,
        # so this returns right when the app begins to serve.
        status, _, _ = curl(namespace, url, timeout=max(1.0, remaining))
        if status == 200:
            return time.monotonic() - service.started
        time.sleep(0.02)


def tcp_counters(namespace: Namespace) -> dict[str, int]:
    """The namespace's TCP counters from /proc/net/snmp and /proc/net/netstat (kernel
    counters are per network namespace): retransmitted segments and timeouts."""
    text = subprocess.run(
        in_ns(namespace, "cat", "/proc/net/snmp", "/proc/net/netstat"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    counters: dict[str, int] = {}
    for names, values in zip(text[::2], text[1::2], strict=False):
        prefix, _, keys = names.partition(":")
        counters.update(
            (f"{prefix}{key}", int(value))
            for key, value in zip(keys.split(), values.partition(":")[2].split(), strict=False)
            if value.lstrip("-").isdigit()
        )
    return counters


def wrk(namespace: Namespace, url: str, body: str, seconds: int) -> dict[str, float]:
    """One wrk run; also how many TCP segments the client retransmitted meanwhile (a
    latency outlier with retransmissions is the lab's network, not the server)."""
    before = tcp_counters(namespace)
    result = subprocess.run(
        in_ns(
            namespace,
            "wrk",
            "-t",
            str(THREADS),
            "-c",
            str(CONNECTIONS),
            "-d",
            f"{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
        ),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env={**os.environ, "BENCH_BODY": body},
    )
    for line in result.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            raw = json.loads(line.removeprefix("BENCH-JSON "))
            errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
            after = tcp_counters(namespace)
            return {
                "retransmits": after["TcpRetransSegs"] - before["TcpRetransSegs"],
                "rps": raw["requests"] / (raw["duration_us"] / 1e6),
                "p50_ms": raw["p50_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "max_ms": raw["max_us"] / 1000,
                "requests": raw["requests"],
                "errors": errors,
            }
    raise RuntimeError(f"wrk printed no summary: {result.stdout}\n{result.stderr}")


# ---------------------------------------------------------------- configuration


def write_config(
    path: Path,
    state: Path,
    fleet: str,
    settings: dict[str, Any],
    port: int,
    *,
    database: str,
    prune_timeout: str,
    prune_interval: str,
) -> None:
    config = {
        "domain": DOMAIN,
        "prune_timeout": prune_timeout,
        "prune_interval": prune_interval,
        "database": database,
        "hosts_file": str(state / "hosts"),
        "wireguard_dir": str(state / "wireguard"),
        "listen": {"host": "::", "port": port},
        "fleets": {fleet: settings},
    }
    path.write_text(yaml.safe_dump(config))


def wg_fleet(lab: Lab, config: Path, log_path: Path) -> Service:
    return Service(
        lab, [sys.executable, "main.py", "--config", str(config), "--log-level", "info"], log_path
    )


def delete_interface(lab: Lab, interface: str) -> None:
    """Flush a fleet's interface: gone, its wireguard-go daemon ended (bounded wait)."""
    lab.server.run("ip", "link", "del", interface, check=False)
    wait_for(
        lambda: not lab.server.ok("ip", "link", "show", "dev", interface),
        30,
        f"{interface} to disappear",
    )
    socket = Path(f"/var/run/wireguard/{interface}.sock")
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not socket.exists(), 10, f"{socket} to go")
    socket.unlink(missing_ok=True)


def peer_count(lab: Lab, interface: str) -> int:
    result = subprocess.run(
        in_ns(lab.server, "wg", "show", interface, "peers"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return len(result.stdout.split()) if result.returncode == 0 else -1


# ---------------------------------------------------------------- throughput


def baseline_services(lab: Lab, state: Path) -> list[Service]:
    """The hello-world app under the plain `uvicorn` command, default settings, one
    listener per address family (uvicorn given `::` listens on IPv6 only)."""
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    return [
        Service(
            lab,
            [uvicorn, "baseline:app", "--host", host, "--port", str(BASELINE_PORT)],
            state / f"baseline-{name}.log",
            cwd=REPO / "bench",
        )
        for name, host in (("ipv4", "0.0.0.0"), ("ipv6", "::"))  # noqa: S104 - in the lab
    ]


def profile(
    lab: Lab, client: Namespace, service: Service, runs: dict[str, tuple[str, str]], out: Path
) -> dict[str, str]:
    """py-spy samples wg-fleet during one extra wrk run of each endpoint; the top
    entries of each profile, as text (raw collapsed stacks kept in `out`)."""
    assert service.process is not None
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    tops = {}
    for name in ("register", "ping"):
        url, body = runs[name]
        raw = out / f"profile-{name}.txt"
        argv = [py_spy, "record", "--pid", str(service.process.pid), "--format", "raw"]
        argv += ["--rate", "250", "--output", str(raw), "--nonblocking"]
        spy = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)  # attached before the load begins
        result = wrk(client, url, body, PROFILE_SECONDS)
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, errors = spy.communicate(timeout=60)
        if not raw.exists():
            raise RuntimeError(f"py-spy wrote no profile: {errors[-2000:]}")
        tops[name] = f"{name}: {result['rps']:.0f} req/s while sampled\n" + profiles.summarize(
            raw.read_text()
        )
        log(tops[name])
    return tops


# wireguard-go holds at most 65,536 peers, and a fleet 60,000 clients (max_clients): a fleet
# above TRIM_ABOVE before a register run keeps only its newest TRIM_TO clients, so every
# run after the first starts from a fleet of 20,000 and grows from there.
TRIM_ABOVE = 30_000
TRIM_TO = 20_000


def trim_fleet(lab: Lab, service: Service, database: str, fleet: str, spare: str) -> int:
    """Delete all but the fleet's newest TRIM_TO rows (and the bench client's, `spare`),
    then have wg-fleet reconcile (SIGHUP) until its interface matches; how many went."""
    engine = make_engine(database)
    newest = (
        select(Client.id).where(Client.fleet == fleet).order_by(Client.id.desc()).limit(TRIM_TO)
    )
    with engine.begin() as connection:
        removed = connection.execute(
            delete(Client.__table__).where(
                Client.fleet == fleet, Client.public_key != spare, Client.id.not_in(newest)
            )
        ).rowcount
    engine.dispose()
    assert service.process is not None
    service.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: peer_count(lab, f"wg_{fleet}") <= TRIM_TO + 1,
        120,
        f"wg_{fleet} to be trimmed to {TRIM_TO} peers",
    )
    log(f"throughput: trimmed the fleet by {removed:,} clients to its newest {TRIM_TO:,}")
    return int(removed)


def throughput(
    lab: Lab,
    work: Path,
    reps: int,
    seconds: int,
    backend: Backend,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    fleet = unique("t")
    settings = fleet_config(fleet, 1)
    state = work / "throughput"
    state.mkdir()
    config = state / "config.yaml"
    database = backend.fresh(state)
    write_config(
        config,
        state,
        fleet,
        settings,
        FLEET_PORT,
        database=database,
        prune_timeout="1d",
        prune_interval="1m",
    )
    lab.interfaces.append(f"wg_{fleet}")
    service = wg_fleet(lab, config, state / "wg-fleet.log")
    baselines = baseline_services(lab, state)
    for process in (service, *baselines):
        process.start()
    wait_answering(lab.server, service, f"http://[::1]:{FLEET_PORT}/health", 60)
    wait_answering(lab.server, baselines[0], f"http://127.0.0.1:{BASELINE_PORT}/docs", 60)
    wait_answering(lab.server, baselines[1], f"http://[::1]:{BASELINE_PORT}/docs", 60)

    client = lab.client()
    status, registration = client.register(fleet)
    assert status == 200, registration
    client.up(registration["config"])
    ip6 = settings["ip6"]
    client.can_ping(ip6)
    status, _ = client.namespace.http("POST", f"http://[{ip6}]:{FLEET_PORT}/fleet/{fleet}/ping", {})
    assert status == 200, "a ping through the tunnel failed"

    runs = {
        "register": (f"http://{SERVER_V4}:{FLEET_PORT}/fleet/{fleet}/register", ""),
        "register_baseline": (f"http://{SERVER_V4}:{BASELINE_PORT}/fleet/{fleet}/register", ""),
        "ping": (f"http://[{ip6}]:{FLEET_PORT}/fleet/{fleet}/ping", "{}"),
        "ping_baseline": (f"http://[{ip6}]:{BASELINE_PORT}/fleet/{fleet}/ping", "{}"),
    }
    results: dict[str, Any] = {name: [] for name in runs}
    serving = {
        "register": service,
        "ping": service,
        "register_baseline": baselines[0],
        "ping_baseline": baselines[1],
    }
    trims = []
    for rep in range(reps):
        for name, (url, body) in runs.items():
            if name == "register" and peer_count(lab, f"wg_{fleet}") > TRIM_ABOVE:
                trims.append(trim_fleet(lab, service, database, fleet, registration["public_key"]))
            wrk(client.namespace, url, body, WARMUP_SECONDS)
            cpu = serving[name].cpu_seconds()
            result = wrk(client.namespace, url, body, seconds)
            # CPU per request of the serving process: robust to a machine shared with others.
            cpu = serving[name].cpu_seconds() - cpu
            result["cpu_ms_per_request"] = 1000 * cpu / max(result["requests"], 1)
            for process in (service, *baselines):
                process.check_alive()
            results[name].append(result)
            log(
                f"throughput {rep + 1}/{reps} {name:<18} {result['rps']:7.0f} req/s  "
                f"p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
                f"errors {result['errors']:.0f}  retransmits {result['retransmits']:.0f}  "
                f"CPU {result['cpu_ms_per_request']:.3f} ms/request"
            )
        if rep == 0 and profile_dir is not None:
            # After the first repetition: the fleet is as large as during the runs, not
            # near max_clients, where registration counts the fleet in the database.
            results["profiles"] = profile(lab, client.namespace, service, runs, profile_dir)
    results["peers_at_end"] = [{"value": peer_count(lab, f"wg_{fleet}")}]
    results["trimmed"] = [{"value": removed} for removed in trims]
    results["trim"] = {"above": TRIM_ABOVE, "to": TRIM_TO}
    for process in (service, *baselines):
        process.stop()
    client.down()
    delete_interface(lab, f"wg_{fleet}")
    return results


# ---------------------------------------------------------------- scale


@dataclass
class Seed:
    fleet: str
    settings: dict[str, Any]
    database: str  # wg-fleet's `database` setting: a file path or a URL
    names: list[tuple[str, str, str]]  # (fleet, address, hostname) of every row
    tunnel_private_key: str
    tunnel_public_key: str
    tunnel_address: IPv6Address
    server_public_key: str
    server_config: str
    seconds: float


def random_addresses(subnet: IPv6Network, server: IPv6Address, count: int) -> list[IPv6Address]:
    base = int(subnet.network_address)
    host_bits = subnet.max_prefixlen - subnet.prefixlen
    taken: set[int] = {0, int(server) - base}
    addresses: list[IPv6Address] = []
    while len(addresses) < count:
        host = secrets.randbits(host_bits)
        if host not in taken:
            taken.add(host)
            addresses.append(IPv6Address(base + host))
    return addresses


def seed(work: Path, size: int, number: int, backend: Backend) -> Seed:
    """A fresh database holding `size` clients of a new fleet (bulk Core insert)."""
    started = time.monotonic()
    fleet = unique("s")
    settings = fleet_config(fleet, number)
    subnet = IPv6Network(settings["subnet"])
    server = IPv6Address(settings["ip6"])
    database = backend.seed_target(work, size)
    engine = make_engine(database)
    upgrade(engine)  # the schema exactly as wg-fleet's migrations make it
    now = datetime.now(UTC)
    registered = now - timedelta(hours=1)
    # Far in the future: never inactive, however short prune_timeout is (phase B).
    active = now + timedelta(days=1)
    keys = [generate_keypair() for _ in range(size)]
    addresses = random_addresses(subnet, server, size)
    rows = [
        {
            "id": i + 1,
            "fleet": fleet,
            "address": str(address),
            "public_key": key.public_key,
            "hostname": f"h{i + 1}",
            "requested_hostname": f"h{i + 1}",
            "source_ip": f"198.18.{(i >> 8) & 255}.{i & 255}",
            "registered_at": registered,
            "last_seen": active,
            "last_handshake": None,
            "last_active": active,
        }
        for i, (key, address) in enumerate(zip(keys, addresses, strict=True))
    ]
    with engine.begin() as connection:
        for start in range(0, size, 10_000):
            connection.execute(insert(Client.__table__), rows[start : start + 10_000])
        if engine.dialect.name == "postgresql":
            # The ids were given, so the sequence behind them never moved: later inserts
            # must not collide with them.
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence('clients', 'id'), max(id)) FROM clients")
            )
    engine.dispose()  # the last connection closed: WAL checkpointed into the file
    server_key = generate_keypair()
    fleet_settings = FleetConfig.model_validate(settings)
    return Seed(
        fleet=fleet,
        settings=settings,
        database=database,
        names=[(fleet, row["address"], row["hostname"]) for row in rows],
        tunnel_private_key=keys[0].private_key,  # row id 1: never among the pruned 10%
        tunnel_public_key=keys[0].public_key,
        tunnel_address=addresses[0],
        server_public_key=server_key.public_key,
        server_config=render_server_config(server_key.private_key, fleet_settings),
        seconds=time.monotonic() - started,
    )


def scrape(namespace: Namespace, port: int, fleet: str) -> tuple[float, float, float]:
    """(prune duration sum, pass count, pruned total) from /metrics."""
    status, text, _ = curl(namespace, f"http://[::1]:{port}/metrics", timeout=30)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}: {text[:200]}")
    values = {}
    pruned = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        series, _, value = line.rpartition(" ")
        values[series] = float(value)
        # Per-fleet series carry more labels than the fleet (`node`, say): match on it.
        name, _, labels = series.partition("{")
        if name == "wg_fleet_pruned_total" and f'fleet="{fleet}"' in labels.rstrip("}").split(","):
            pruned += float(value)
    return (
        values["wg_fleet_prune_duration_seconds_sum"],
        values["wg_fleet_prune_duration_seconds_count"],
        pruned,
    )


def next_pass(
    namespace: Namespace,
    service: Service,
    port: int,
    fleet: str,
    previous: tuple[float, float, float],
    timeout: float,
    accept: Callable[[float], bool],
) -> tuple[float, tuple[float, float, float], bool]:
    """Scrape until a pass whose pruned-count growth satisfies `accept` ends.

    Returns (that pass's duration, the scrape after it, whether it was isolated, i.e.
    the only pass in its scrape interval).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        service.check_alive()
        current = scrape(namespace, port, fleet)
        passes = current[1] - previous[1]
        if passes >= 1 and accept(current[2] - previous[2]):
            return (current[0] - previous[0]) / passes, current, passes == 1
        if passes >= 1:
            previous = current
    raise RuntimeError(f"no matching pruning pass within {timeout:g} s")


def in_process_hosts(seed_: Seed, directory: Path) -> float:
    """render_hosts + write_if_changed over every named row, as the service does it."""
    path = directory / "hosts-inprocess"
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    text = render_hosts(seed_.names, DOMAIN)
    write_if_changed(path, text, 0o644)
    return time.perf_counter() - started


def scale(
    lab: Lab, work: Path, size: int, number: int, reps: int, backend: Backend
) -> tuple[Seed, list[ScaleRun]]:
    log(f"scale {size}: seeding {size} clients")
    seeded = seed(work, size, number, backend)
    log(f"scale {size}: seeded in {seeded.seconds:.1f} s")
    fleet, settings = seeded.fleet, seeded.settings
    interface = f"wg_{fleet}"
    lab.interfaces.append(interface)
    state = work / f"scale-{size}"
    (state / "wireguard").mkdir(parents=True)
    conf = state / "wireguard" / f"{interface}.conf"
    conf.write_text(seeded.server_config)
    conf.chmod(0o600)
    config_a, config_b = state / "config-a.yaml", state / "config-b.yaml"
    base = f"http://[::1]:{SCALE_PORT}"
    hosts_file = state / "hosts"

    tunnel_ns = lab.clients[0].namespace if lab.clients else lab.client().namespace
    tunnel = harness.Client(tunnel_ns, "", config_dir=state)
    lab.interfaces.append(tunnel.interface)
    tunnel_config = (
        f"[Interface]\nPrivateKey = {seeded.tunnel_private_key}\n"
        f"Address = {seeded.tunnel_address}/128\n\n"
        f"[Peer]\nPublicKey = {seeded.server_public_key}\n"
        f"Endpoint = {SERVER_V4}:{settings['port']}\nAllowedIPs = {settings['ip6']}/128\n"
    )
    ping_url = f"http://[{settings['ip6']}]:{SCALE_PORT}/fleet/{fleet}/ping"

    runs = []
    for rep in range(reps):
        run = ScaleRun()
        database = backend.copy(seeded.database, state)
        for path, prune_timeout, prune_interval in ((config_a, "1d", "1h"), (config_b, "2s", "1s")):
            write_config(
                path,
                state,
                fleet,
                settings,
                SCALE_PORT,
                database=database,
                prune_timeout=prune_timeout,
                prune_interval=prune_interval,
            )
        delete_interface(lab, interface)

        # Phase A: start-up with the interface flushed, fleet page, hosts file.
        service = wg_fleet(lab, config_a, state / f"wg-fleet-{rep}a.log")
        service.start()
        healthy = wait_answering(lab.server, service, f"{base}/health", 120)
        # Start-up is over when both hold; the time of the check that saw the last one
        # (not the end of our own `wg show`) counts.
        deadline = time.monotonic() + 120
        checked = healthy
        while (peers := peer_count(lab, interface)) != size:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{interface} holds {peers} peers, not {size}")
            time.sleep(0.05)
            checked = time.monotonic() - service.started
        run.startup_s = checked
        if checked > healthy:
            run.notes.append(f"/health 200 after {healthy:.2f} s, before all peers were back")

        pages = []
        for _ in range(6):
            status, _, seconds = curl(lab.server, f"{base}/fleet/{fleet}")
            assert status == 200, f"fleet page answered {status}"
            pages.append(seconds * 1000)
        run.fleet_page_first_ms = pages[0]
        run.fleet_page_ms = statistics.median(pages[1:])

        tunnel.up(tunnel_config)
        tunnel.can_ping(settings["ip6"])
        renames = []
        for k in range(3):
            name = f"renamed-{rep}-{k}"
            needle = f" {name}.{fleet}.{DOMAIN}\n"
            started = time.monotonic()
            ping = subprocess.Popen(
                in_ns(
                    tunnel_ns,
                    "curl",
                    "-sS",
                    "-m",
                    "30",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    json.dumps({"hostname": name}),
                    ping_url,
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            deadline = started + 30
            while needle not in hosts_file.read_text():
                if time.monotonic() > deadline:
                    ping.kill()
                    raise RuntimeError(f"{name} never reached {hosts_file}")
                time.sleep(0.002)
            renames.append((time.monotonic() - started) * 1000)
            out, _ = ping.communicate(timeout=30)
            assert out == "200", f"rename ping answered {out}"
        run.hosts_ms = statistics.median(renames)
        tunnel.down()
        run.hosts_inprocess_ms = in_process_hosts(seeded, state) * 1000
        rss_a = service.peak_rss_mb()
        service.stop()

        # Phase B: pruning passes every second; every row stays active until we age 10%.
        service = wg_fleet(lab, config_b, state / f"wg-fleet-{rep}b.log")
        service.start()
        wait_answering(lab.server, service, f"{base}/health", 120)
        previous = scrape(lab.server, SCALE_PORT, fleet)
        _, previous, _ = next_pass(
            lab.server, service, SCALE_PORT, fleet, previous, 60, lambda pruned: pruned == 0
        )
        run.prune_empty_s, previous, isolated = next_pass(
            lab.server, service, SCALE_PORT, fleet, previous, 60, lambda pruned: pruned == 0
        )
        run.prune_isolated &= isolated
        old = datetime.now(UTC) - timedelta(days=2)
        engine = make_engine(database)
        table = Client.__table__
        with engine.begin() as connection:
            aged = connection.execute(
                update(table)
                .where(table.c.id % 10 == 5)
                .values(registered_at=old, last_seen=old, last_active=old, last_handshake=None)
            ).rowcount
        engine.dispose()
        run.prune_remove_s, previous, isolated = next_pass(
            lab.server,
            service,
            SCALE_PORT,
            fleet,
            previous,
            60,
            lambda pruned, aged=aged: pruned >= aged,
        )
        run.prune_isolated &= isolated
        if not run.prune_isolated:
            run.notes.append("a prune figure is the mean of two passes in one scrape interval")
        remaining = peer_count(lab, interface)
        if remaining != size - aged:
            run.notes.append(f"after pruning {remaining} peers, expected {size - aged}")
        run.rss_mb = max(rss_a, service.peak_rss_mb())
        service.stop()
        runs.append(run)
        log(
            f"scale {size} {rep + 1}/{reps}: start-up {run.startup_s:.2f} s, "
            f"prune empty {run.prune_empty_s:.3f} s, remove {aged} {run.prune_remove_s:.3f} s, "
            f"fleet page {run.fleet_page_ms:.0f} ms (first {run.fleet_page_first_ms:.0f}), "
            f"hosts {run.hosts_ms:.0f} ms (in-process {run.hosts_inprocess_ms:.0f}), "
            f"RSS {run.rss_mb:.0f} MB; {'; '.join(run.notes)}"
        )
    delete_interface(lab, interface)
    return seeded, runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 clients only, one run each")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, 1 with --quick)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--sizes",
        help="comma-separated client counts (default 10000,50000; none with --postgres)",
    )
    parser.add_argument(
        "--skip-throughput", action="store_true", help="only the scale section (--sizes)"
    )
    parser.add_argument("--skip-scale", action="store_true", help="only the throughput section")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="wg-fleet's database on PostgreSQL instead of SQLite: a throwaway cluster "
        "started and removed by the run (needs Debian's postgresql); the scale section is "
        "skipped unless --sizes is given, and then runs on PostgreSQL too",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the throughput runs, sample wg-fleet with py-spy during one more "
        "register and one more ping run; raw profiles go to DIR, the top entries to the report",
    )
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/run needs root (network namespaces, WireGuard interfaces).", file=sys.stderr)
        return 1
    reps = arguments.reps or (1 if arguments.quick else 3)
    if arguments.skip_scale:
        sizes = []
    elif arguments.sizes:
        sizes = [int(s) for s in arguments.sizes.split(",")]
    elif arguments.postgres:
        sizes = []
    else:
        sizes = [10_000] if arguments.quick else [10_000, 50_000]
    if arguments.skip_throughput and not sizes:
        parser.error("--skip-throughput with --postgres leaves nothing to run: give --sizes")
    command = "sudo bench/run" + (" --quick" if arguments.quick else "")
    extra_args = [a for a in sys.argv[1:] if a != "--quick"]
    if extra_args:
        command += " " + " ".join(extra_args)

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="wg-fleet-bench-"))
    work.chmod(0o755)
    started = time.monotonic()
    backend: Backend = SQLiteBackend()
    lab: Lab | None = None
    try:
        if arguments.postgres:
            backend = PostgresBackend()
        log(f"database: {backend.describe()}")
        lab = Lab(work)
        throughput_results = None
        if not arguments.skip_throughput:
            if arguments.profile:
                arguments.profile.mkdir(parents=True, exist_ok=True)
            throughput_results = throughput(
                lab, work, reps, arguments.seconds, backend, arguments.profile
            )
        scale_results: dict[int, list[ScaleRun]] = {}
        for number, size in enumerate(sizes, start=2):
            _, scale_results[size] = scale(lab, work, size, number, reps, backend)
    finally:
        if lab is not None:
            lab.close()  # wg-fleet first: it is connected to the database
        backend.close(work)
        if arguments.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(f"finished in {time.monotonic() - started:.0f} s")
    if arguments.json:
        arguments.json.write_text(
            json.dumps(
                {
                    "database": backend.describe(),
                    "throughput": throughput_results,
                    "scale": {n: [vars(r) for r in runs] for n, runs in scale_results.items()},
                },
                indent=2,
                default=str,
            )
        )
    conditions = (
        f"{CONNECTIONS} connections, {THREADS} wrk threads, {arguments.seconds} s per run "
        f"after a {WARMUP_SECONDS} s warm-up"
    )
    print(
        report(
            throughput_results,
            scale_results,
            database=backend.describe(),
            command=command,
            reps=reps,
            conditions=conditions,
            load=load,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

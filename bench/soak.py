"""wg-fleet's soak run: steady churn for a long time, watching for leaks and errors.

Run it through `sudo bench/soak [--minutes 30]`; it is not part of the test suite. Like
the benchmark it builds its own network namespaces (the end-to-end tests' harness) and
removes them at the end; traffic never leaves them.

1. Capacity: `wrk` (32 connections, 10 s) measures registrations over the LAN and pings
   through a tunnel, each alone, on this machine, right now.
2. Churn for `--minutes`, open loop (requests are sent on a schedule, not as fast as
   answers come back) at `--load` (default 0.5) of that capacity, split evenly between
   the two kinds: `load/2` of the register capacity plus `load/2` of the ping capacity.
   - registrations: new server-made key pairs that never handshake, so every one of them
     is pruned `prune_timeout` (2 min) later: a steady stream of prunes;
   - pings from several clients through their own tunnels; every 10th one asks for a
     name, alternating between one all of them want (`soak`, so they get numbered
     `soak2`, `soak3`…) and one of their own: a steady stream of renames.
3. Every 10 s the service's RSS and open file descriptors are sampled. Growth is the
   mean of the last fifth of the run over the mean of the first sample window after
   the warm-up (`--warmup`, default 5 min: two prune timeouts and more, so the number of
   clients has reached its steady level).
4. At the end: load stopped, the database's keys must equal the interface's peers.

Prints a JSON summary (also written to `--json`) and one verdict line per target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import SERVER_V4, Lab, Namespace, fleet_config, unique, wait_for

REPO = Path(__file__).resolve().parents[1]
PORT = 8000
PING_CLIENTS = 4
SAMPLE_SECONDS = 10
LUA = REPO / "bench" / "post.lua"

# Sends POSTs to `url` on a schedule (`rate` per second, spread over `threads` threads with
# one keep-alive connection each) for `seconds`. Every `name_every`-th request of a ping
# load carries a hostname, alternating between `shared` and `own`. Prints one JSON line
# per 10 s window and a final one: counts per status (0: no answer) and latencies.
LOAD = r"""
import http.client, json, sys, threading, time, urllib.parse
url, rate, seconds, threads = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
kind = sys.argv[5]
shared, own = (sys.argv[6], sys.argv[7]) if kind == "ping" else (None, None)
parts = urllib.parse.urlsplit(url)
lock = threading.Lock()
start = time.monotonic()
state = {"next": 0, "window": {}, "total": {}, "lat": [], "all": [], "late": 0, "bodies": []}

def send(connection, i):
    body, headers = None, {}
    if kind == "ping":
        body = "{}"
        if i % 10 == 0:
            body = json.dumps({"hostname": shared if (i // 10) % 2 else own})
        headers = {"Content-Type": "application/json"}
    connection.request("POST", parts.path, body=body, headers=headers)
    response = connection.getresponse()
    text = response.read()
    return response.status, text

def work():
    connection = None
    while True:
        with lock:
            i = state["next"]
            state["next"] += 1
        due = start + i / rate
        if due - start >= seconds:
            return
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1:
            with lock:
                state["late"] += 1
        began = time.monotonic()
        try:
            if connection is None:
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            status, text = send(connection, i)
        except Exception as error:
            status, text = 0, repr(error).encode()
            connection = None
        elapsed = time.monotonic() - began
        with lock:
            for counts in (state["window"], state["total"]):
                counts[str(status)] = counts.get(str(status), 0) + 1
            state["lat"].append(elapsed)
            state["all"].append(elapsed)
            if status >= 500 or status == 0:
                if len(state["bodies"]) < 20:
                    state["bodies"].append(text[:300].decode(errors="replace"))

def report(final=False):
    with lock:
        lat = sorted(state["all" if final else "lat"])
        line = {
            "t": round(time.monotonic() - start, 1),
            "counts": state["total" if final else "window"],
            "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
            "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 1) if lat else None,
            "late": state["late"],
        }
        if final:
            line["final"] = True
            line["errors"] = state["bodies"]
        else:
            state["window"], state["lat"] = {}, []
    print(json.dumps(line), flush=True)

workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
for worker in workers:
    worker.start()
while any(worker.is_alive() for worker in workers):
    time.sleep(10)
    report()
report(final=True)
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def in_ns(namespace: Namespace, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", namespace.name, *argv]


def wrk_rate(namespace: Namespace, url: str, body: str, seconds: int = 10) -> float:
    """Requests per second `wrk` gets, closed loop, with the benchmark's settings."""
    result = subprocess.run(
        [
            *in_ns(
                namespace, "wrk", "-t", "2", "-c", "32", "-d", f"{seconds}s", "--timeout", "10s"
            ),
            "-s",
            str(LUA),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env={**os.environ, "BENCH_BODY": body},
        check=True,
    )
    for line in result.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            raw = json.loads(line.removeprefix("BENCH-JSON "))
            return float(raw["requests"]) / (float(raw["duration_us"]) / 1e6)
    raise RuntimeError(f"wrk printed no summary: {result.stdout}\n{result.stderr}")


def sample(pid: int) -> tuple[float, int]:
    """(RSS in MB, open file descriptors) of the process `pid`."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, "no VmRSS"
    return int(match.group(1)) / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def database_keys(path: Path, fleet: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        rows = connection.execute("SELECT public_key FROM clients WHERE fleet = ?", (fleet,))
        return {key for (key,) in rows}


def interface_keys(lab: Lab, interface: str) -> set[str]:
    return set(lab.server.run("wg", "show", interface, "peers", timeout=120).split())


def growth(values: list[float], warmup_index: int) -> tuple[float, float, float]:
    """(after warm-up, at the end, growth in %): means of one window each."""
    window = max(1, (len(values) - warmup_index) // 5)
    first = statistics.mean(values[warmup_index : warmup_index + window])
    last = statistics.mean(values[-window:])
    return first, last, 100 * (last - first) / first


def soak(lab: Lab, work: Path, minutes: float, warmup: float, load: float) -> dict[str, Any]:
    fleet = unique("k")
    settings = fleet_config(fleet, 9)
    interface = f"wg_{fleet}"
    lab.interfaces.append(interface)
    state = work / "service"
    state.mkdir()
    database = state / "clients.db"
    config = state / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "domain": "soak.internal",
                "prune_timeout": "2m",
                "prune_interval": "10s",
                "database": str(database),
                "hosts_file": str(state / "hosts"),
                "wireguard_dir": str(state / "wireguard"),
                "listen": {"host": "::", "port": PORT},
                "fleets": {fleet: settings},
            }
        )
    )
    log_path = state / "wg-fleet.log"
    with log_path.open("ab") as out:
        service = subprocess.Popen(
            in_ns(lab.server, sys.executable, "main.py", "--config", str(config)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
    try:
        wait_for(
            lambda: lab.server.http("GET", f"http://[::1]:{PORT}/health")[0] == 200,
            60,
            "wg-fleet to answer",
        )
        ip6 = settings["ip6"]
        ping_url = f"http://[{ip6}]:{PORT}/fleet/{fleet}/ping"
        register_url = f"http://{SERVER_V4}:{PORT}/fleet/{fleet}/register"
        clients = []
        for _ in range(PING_CLIENTS):
            client = lab.client()
            status, answer = client.register(fleet)
            assert status == 200, answer
            client.up(answer["config"])
            client.can_ping(ip6)
            clients.append(client)
        registrar = lab.client()

        log("measuring capacity with wrk (10 s each)")
        register_capacity = wrk_rate(registrar.namespace, register_url, "")
        ping_capacity = wrk_rate(clients[0].namespace, ping_url, "{}")
        register_rate = load / 2 * register_capacity
        ping_rate = load / 2 * ping_capacity
        log(
            f"capacity: register {register_capacity:.0f}/s, ping {ping_capacity:.0f}/s; "
            f"churn at {register_rate:.0f} registrations/s and {ping_rate:.0f} pings/s "
            f"for {minutes:g} min"
        )
        # Let the probe's registrations age out before the clock starts.
        seconds = minutes * 60
        loads = [
            subprocess.Popen(
                [
                    *in_ns(registrar.namespace, sys.executable, "-c", LOAD),
                    register_url,
                    str(register_rate),
                    str(seconds),
                    "32",
                    "register",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        ]
        for number, client in enumerate(clients, start=1):
            loads.append(
                subprocess.Popen(
                    [
                        *in_ns(client.namespace, sys.executable, "-c", LOAD),
                        ping_url,
                        str(ping_rate / len(clients)),
                        str(seconds),
                        "8",
                        "ping",
                        "soak",
                        f"own{number}",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        samples: list[dict[str, float]] = []
        began = time.monotonic()
        while any(process.poll() is None for process in loads):
            if service.poll() is not None:
                raise RuntimeError(f"wg-fleet exited {service.returncode}")
            rss, fds = sample(service.pid)
            elapsed = time.monotonic() - began
            clients_now = len(database_keys(database, fleet))
            samples.append({"t": elapsed, "rss_mb": rss, "fds": fds, "clients": clients_now})
            if len(samples) % 6 == 0:
                log(f"{elapsed / 60:5.1f} min: RSS {rss:.1f} MB, {fds} fds, {clients_now} clients")
            time.sleep(SAMPLE_SECONDS)
        finals = []
        for process in loads:
            output, _ = process.communicate(timeout=120)
            lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
            finals.append(next(line for line in lines if line.get("final")))

        # Load stopped: the database and the interface must hold the same clients. A pass
        # may be deleting rows right now, so compare peers, rows, peers until they agree.
        def agree() -> tuple[set[str], set[str]] | None:
            before = interface_keys(lab, interface)
            rows = database_keys(database, fleet)
            after = interface_keys(lab, interface)
            return (rows, after) if before == rows == after else None

        agreed = None
        with contextlib.suppress(AssertionError):
            agreed = wait_for(agree, 60, "the database to equal the interface", interval=1)
        rows = database_keys(database, fleet)
        peers = interface_keys(lab, interface)
        rss_after, fds_after = sample(service.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.wait(timeout=30)

    warmup_index = next(
        (i for i, s in enumerate(samples) if s["t"] >= warmup * 60), len(samples) - 1
    )
    rss_first, rss_last, rss_growth = growth([s["rss_mb"] for s in samples], warmup_index)
    fds_first, fds_last, fds_growth = growth([s["fds"] for s in samples], warmup_index)
    totals: dict[str, dict[str, int]] = {"register": {}, "ping": {}}
    for index, final in enumerate(finals):
        kind = "register" if index == 0 else "ping"
        for status, count in final["counts"].items():
            totals[kind][status] = totals[kind].get(status, 0) + count
    server_errors = sum(
        count
        for kind in totals.values()
        for status, count in kind.items()
        if int(status) >= 500 or int(status) == 0
    )
    log_text = log_path.read_text(errors="replace")
    return {
        "minutes": minutes,
        "warmup_minutes": warmup,
        "load": load,
        "capacity": {"register": register_capacity, "ping": ping_capacity},
        "rates": {"register": register_rate, "ping": ping_rate},
        "requests": totals,
        "server_errors": server_errors,
        "error_samples": [e for final in finals for e in final["errors"]][:10],
        "late_requests": sum(final["late"] for final in finals),
        "latency_ms": {
            "register": {"p50": finals[0]["p50_ms"], "p99": finals[0]["p99_ms"]},
            "ping": {"p50": finals[1]["p50_ms"], "p99": finals[1]["p99_ms"]},
        },
        "rss_mb": {
            "after_warmup": rss_first,
            "end": rss_last,
            "growth_pct": rss_growth,
            "max": max(s["rss_mb"] for s in samples),
            "after_load": rss_after,
        },
        "fds": {
            "after_warmup": fds_first,
            "end": fds_last,
            "growth_pct": fds_growth,
            "max": max(s["fds"] for s in samples),
            "after_load": fds_after,
        },
        "clients": {
            "steady_mean": statistics.mean(s["clients"] for s in samples[warmup_index:]),
            "max": max(s["clients"] for s in samples),
        },
        "database_equals_interface": agreed is not None,
        "rows_at_end": len(rows),
        "peers_at_end": len(peers),
        "tracebacks_in_log": log_text.count("Traceback"),
        "pruned_lines_in_log": log_text.count("pruned"),
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30, help="length of the churn")
    parser.add_argument("--warmup", type=float, default=5, help="minutes not judged")
    parser.add_argument("--load", type=float, default=0.5, help="fraction of the capacity")
    parser.add_argument("--json", type=Path, help="also write the summary to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/soak needs root (network namespaces, WireGuard).", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="wg-fleet-soak-"))
    work.chmod(0o755)
    lab = Lab(work)
    try:
        result = soak(lab, work, arguments.minutes, arguments.warmup, arguments.load)
    finally:
        lab.close()
        if arguments.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = {k: v for k, v in result.items() if k != "samples"}
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    checks = {
        "RSS growth after warm-up ≤ 10%": result["rss_mb"]["growth_pct"] <= 10,
        "open fds growth after warm-up ≤ 10%": result["fds"]["growth_pct"] <= 10,
        "no 5xx and no unanswered request": result["server_errors"] == 0,
        "database equals the interface at the end": result["database_equals_interface"],
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

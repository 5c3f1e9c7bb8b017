"""Load for tests/e2e/test_admin_load.py, run inside the server's namespace.

    admin_load.py attack URL SECONDS CLIENTS N  wrong admin passwords, each client from
                                                an address of its own (127.0.N.x)
    admin_load.py probe URL SECONDS             /health latencies
    admin_load.py register URL FLEET SECONDS    registrations per second

Prints one JSON object; `attack` first prints the line "started" once its first answer
arrived, so that the test can measure while the attack is under way.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import sys
import threading
import time

import httpx

PROBE_INTERVAL = 0.05
REGISTERING_THREADS = 2


async def attack(url: str, seconds: float, clients: int, subnet: int) -> dict[str, object]:
    """Keep-alive HTTP/1.1 over plain asyncio streams: the attack's own CPU cost stays
    small, so the machine's CPUs measure the server, not the load generator."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    statuses: collections.Counter[int] = collections.Counter()
    started = asyncio.Event()
    deadline = time.monotonic() + seconds

    async def one(number: int) -> None:
        reader, writer = await asyncio.open_connection(
            host, int(port), local_addr=(f"127.0.{subnet}.{10 + number}", 0)
        )
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            secret = base64.b64encode(f"admin:wrong-{number}-{attempt}".encode()).decode()
            writer.write(
                f"GET /api/fleets HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Basic {secret}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            statuses[status] += 1
            if not started.is_set():
                started.set()
                print("started", flush=True)  # noqa: T201
        writer.close()

    await asyncio.gather(*(one(n) for n in range(clients)))
    return {"statuses": {str(k): v for k, v in statuses.items()}}


def probe(url: str, seconds: float) -> dict[str, object]:
    """/health latencies, one request every PROBE_INTERVAL on a kept-alive connection
    (a process of its own, so that no other thread of the load competes for its GIL)."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as http:
        while time.monotonic() < deadline:
            begun = time.perf_counter()
            response = http.get(f"{url}/health")
            latencies.append(time.perf_counter() - begun)
            assert response.status_code == 200, response.text
            time.sleep(PROBE_INTERVAL)
    return {"health": latencies}


def register(url: str, fleet: str, seconds: float) -> dict[str, object]:
    """Registrations from REGISTERING_THREADS threads, each one after the other."""
    done: list[float] = []  # seconds after the start at which each registration ended
    failed = [0] * REGISTERING_THREADS
    begun = time.monotonic()
    deadline = begun + seconds

    def loop(index: int) -> None:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < deadline:
                response = http.post(f"{url}/fleet/{fleet}/register")
                if response.status_code == 200:
                    done.append(time.monotonic() - begun)
                else:
                    failed[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(REGISTERING_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    per_second = [0] * int(seconds)
    for moment in done:
        if moment < len(per_second):
            per_second[int(moment)] += 1
    return {"per_second": per_second, "failed": sum(failed)}


def main(argv: list[str]) -> None:
    mode, url = argv[0], argv[1]
    if mode == "attack":
        result = asyncio.run(attack(url, float(argv[2]), int(argv[3]), int(argv[4])))
    elif mode == "probe":
        result = probe(url, float(argv[2]))
    else:
        result = register(url, argv[2], float(argv[3]))
    print(json.dumps(result), flush=True)  # noqa: T201


if __name__ == "__main__":
    main(sys.argv[1:])

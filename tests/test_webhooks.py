"""webhooks.py against a real HTTP receiver on loopback: signatures, order, retries,
restarts, giving up, and a slow receiver that must not slow registration."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import webhooks
from config import Config
from events import record
from tests.conftest import FLEET
from tests.fakes import FakeClock
from tests.test_events import ping, register
from webhooks import backoff

StartApp = Callable[..., Any]
SECRET = "a-webhook-secret-of-some-length"


@dataclass
class Receiver:
    """Records every POST; answers `status` (500 while `failing` > 0) after `delay` s."""

    failing: int = 0
    delay: float = 0.0
    received: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    arrived: int = 0  # requests begun, answered or not

    def delivered(self) -> list[dict[str, Any]]:
        """Bodies answered 2xx, after checking each one's signature independently."""
        with self.lock:
            good = [(h, b) for h, b, status in self.received if status == 200]
        out = []
        for headers, body in good:
            stamp = headers["x-wg-fleet-timestamp"]
            expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
            assert headers["x-wg-fleet-signature"] == "sha256=" + expected.hexdigest()
            assert abs(int(stamp) - time.time()) < 60
            event = json.loads(body)
            assert headers["x-wg-fleet-event"] == event["type"]
            assert headers["x-wg-fleet-delivery"] == str(event["id"])
            out.append(event)
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.arrived += 1
            time.sleep(state.delay)
            with state.lock:
                status = 500 if state.failing > 0 else 200
                state.failing -= 1
                headers = {k.lower(): v for k, v in self.headers.items()}
                state.received.append((headers, body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "POLL_SECONDS", 0.05)


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def hook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"url": receiver.url, "secret": SECRET, **extra}


def test_backoff_doubles_from_one_second_to_five_minutes() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4, 9, 10, 50)] == [1, 2, 4, 8, 256, 300, 300]


async def test_events_arrive_signed_and_in_order(start_app: StartApp, receiver: Receiver) -> None:
    async with start_app(webhooks=[hook(receiver)]) as running:
        client = await register(running)
        await ping(running, client["address"], "excavator")
        await ping(running, client["address"], "digger")
        await until(lambda: len(receiver.delivered()) == 3)
        render = running.context.metrics.render
        await until(lambda: b"wg_fleet_webhook_pending 0.0" in render({}, {}))
        metrics = (await running.client().get("/metrics")).text
    events = receiver.delivered()
    assert [e["type"] for e in events] == ["registered", "renamed", "renamed"]
    assert [e["detail"] for e in events[1:]] == [
        {"from": None, "to": "excavator"},
        {"from": "excavator", "to": "digger"},
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert events[0]["address"] == client["address"]
    assert 'wg_fleet_webhook_deliveries_total{result="delivered"} 3.0' in metrics
    assert "wg_fleet_webhook_pending 0.0" in metrics


async def test_filters_by_type_and_fleet(start_app: StartApp, receiver: Receiver) -> None:
    only = hook(receiver, events=["renamed"], fleets=[FLEET])
    async with start_app(webhooks=[only]) as running:
        client = await register(running)
        async with running.client() as http:
            assert (await http.post("/fleet/beta/register")).status_code == 200
        await ping(running, client["address"], "excavator")
        await until(lambda: len(receiver.delivered()) == 1)
        await asyncio.sleep(0.3)  # nothing else follows
    assert [e["type"] for e in receiver.delivered()] == ["renamed"]


async def test_a_failing_receiver_gets_every_event_in_order_later(
    start_app: StartApp, receiver: Receiver
) -> None:
    receiver.failing = 2  # two 500s: retried after 1 s, then 2 s
    async with start_app(webhooks=[hook(receiver)]) as running:
        client = await register(running)
        await ping(running, client["address"], "excavator")
        await until(lambda: len(receiver.delivered()) == 2)
        metrics = (await running.client().get("/metrics")).text
    assert [status for _, _, status in receiver.received] == [500, 500, 200, 200]
    assert [e["type"] for e in receiver.delivered()] == ["registered", "renamed"]
    assert 'wg_fleet_webhook_deliveries_total{result="failed"} 2.0' in metrics


async def test_events_recorded_while_stopped_are_sent_after_a_restart(
    start_app: StartApp, make_config: Callable[..., Config], receiver: Receiver
) -> None:
    config = make_config(webhooks=[hook(receiver)])
    receiver.failing = 10**6  # nothing gets through before the stop
    async with start_app(config) as running:
        await register(running)
        await until(lambda: len(receiver.received) >= 1)
    receiver.failing = 0
    async with start_app(config) as running:
        await register(running)
        await until(lambda: len(receiver.delivered()) == 2)
    assert [e["type"] for e in receiver.delivered()] == ["registered", "registered"]
    ids = [e["id"] for e in receiver.delivered()]
    assert ids[0] < ids[1]


async def test_an_old_event_is_given_up(
    start_app: StartApp, receiver: Receiver, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "FIRST_RETRY", 0.05)
    receiver.failing = 10**6
    async with start_app(webhooks=[hook(receiver)], webhook_give_up="1h") as running:
        await register(running)
        await until(lambda: len(receiver.received) >= 2)
        clock.advance(hours=2)
        await until(
            lambda: 'result="given_up"} 1.0' in running.context.metrics.render({}, {}).decode()
        )
        receiver.failing = 0
        await register(running)
        await until(lambda: len(receiver.delivered()) == 1)
    assert receiver.delivered()[0]["type"] == "registered"


async def test_a_slow_receiver_does_not_slow_registration(
    start_app: StartApp, receiver: Receiver
) -> None:
    receiver.delay = 3.0
    async with start_app(webhooks=[hook(receiver)]) as running:
        await register(running)
        await until(lambda: receiver.arrived == 1)  # a delivery is hanging now
        started = time.monotonic()
        for _ in range(5):
            await register(running)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"five registrations took {elapsed:.1f} s"


async def test_each_node_delivers_only_what_it_recorded(
    start_app: StartApp, receiver: Receiver, clock: FakeClock
) -> None:
    """Nodes sharing a database: an event another node recorded is that node's to send."""
    async with start_app(webhooks=[hook(receiver)], node="east-1") as running:
        await running.context.database.write(
            lambda session: (
                record(session, "registered", fleet="beta", node="west-1", time=clock.now),
                session.commit(),
            )
        )
        await register(running)
        await until(lambda: len(receiver.delivered()) == 1)
        await asyncio.sleep(0.3)
    assert [e["node"] for e in receiver.delivered()] == ["east-1"]

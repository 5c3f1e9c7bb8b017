"""Webhooks: every event POSTed, signed, at least once and in order, to each configured URL.

The outbox is the event log itself plus one cursor per URL (`webhook_cursors`): the id
of the last event handed over. A worker per URL reads the events after its cursor,
POSTs them one at a time and advances the cursor only after a 2xx, so a restart or a
`kill -9` resends at most the event in flight. A failure is retried with exponential
backoff (1 s doubling to 5 min); an event older than `webhook_give_up` is given up
(logged) and the worker moves on. The workers are lifespan-owned tasks using their own
HTTP client: a slow or dead receiver never holds up a registration or a ping.

Where nodes share a database, each node delivers the events it recorded (its own
fleets'), with a cursor of its own per URL: no event is sent twice by two nodes.

Signature: `X-WG-Fleet-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
with `X-WG-Fleet-Timestamp` the unix seconds at sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config import Config, WebhookConfig
from database import Database
from events import Event, WebhookCursor, as_json
from metrics import Metrics

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
FIRST_RETRY = 1.0
LAST_RETRY = 300.0
BATCH = 100
TIMEOUT = 10.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def backoff(failures: int) -> float:
    """Seconds to wait after the `failures`-th failure in a row: 1, 2, 4 … at most 300."""
    return min(LAST_RETRY, FIRST_RETRY * 2.0 ** max(failures - 1, 0))


def cursor_key(node: str, url: str) -> str:
    return f"{node} {url}"


def _matching(hook: WebhookConfig, node: str, after: int) -> Any:
    query = select(Event).where(Event.id > after, Event.node == node)
    if hook.events:
        query = query.where(Event.type.in_(hook.events))
    if hook.fleets:
        query = query.where(Event.fleet.in_(hook.fleets))
    return query


def start_cursors(session: Session, keys: list[str]) -> None:
    """A URL seen for the first time starts after the newest event (no history replayed).
    Called before the start-up pass, so the events that pass records are delivered."""
    newest = session.scalar(select(func.max(Event.id))) or 0
    for key in keys:
        if session.get(WebhookCursor, key) is None:
            session.add(WebhookCursor(url=key, last_id=newest))
    session.commit()


def read_cursor(session: Session, url: str) -> int:
    cursor = session.get(WebhookCursor, url)
    return cursor.last_id if cursor is not None else 0


def pending_after(
    session: Session, hook: WebhookConfig, node: str, after: int
) -> tuple[list[Event], int]:
    """The next events of `node` for `hook` after `after` and how many are waiting."""
    matching = _matching(hook, node, after)
    batch = list(session.scalars(matching.order_by(Event.id).limit(BATCH)))
    waiting = session.scalar(select(func.count()).select_from(matching.subquery()))
    return batch, int(waiting or 0)


def advance(session: Session, url: str, event_id: int) -> None:
    cursor = session.get(WebhookCursor, url)
    if cursor is None:
        session.add(WebhookCursor(url=url, last_id=event_id))
    elif cursor.last_id < event_id:
        cursor.last_id = event_id
    session.commit()


class Deliverer:
    """One worker task per configured webhook URL."""

    def __init__(
        self,
        config: Config,
        database: Database,
        metrics: Metrics,
        clock: Callable[[], datetime],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._database = database
        self._metrics = metrics
        self._clock = clock
        self._client = httpx.AsyncClient(timeout=TIMEOUT, transport=transport)
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, int] = {}

    def start(self) -> None:
        for index, hook in enumerate(self._config.webhooks):
            self._tasks.append(
                asyncio.create_task(self._run(hook), name=f"wg-fleet-webhook-{index}")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._client.aclose()

    def _set_pending(self, url: str, count: int) -> None:
        self._pending[url] = count
        self._metrics.webhook_pending.set(sum(self._pending.values()))

    async def _run(self, hook: WebhookConfig) -> None:
        while True:
            try:
                await self._deliver_waiting(hook)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("webhook %s: the delivery loop failed; retrying", hook.url)
            await asyncio.sleep(POLL_SECONDS)

    async def _deliver_waiting(self, hook: WebhookConfig) -> None:
        node = self._config.node
        key = cursor_key(node, hook.url)
        after = await self._database.read(lambda session: read_cursor(session, key))
        while True:
            batch, waiting = await self._database.read(
                partial(pending_after, hook=hook, node=node, after=after)
            )
            self._set_pending(hook.url, waiting)
            if not batch:
                return
            for event in batch:
                await self._deliver(hook, event)
                after = event.id
                await self._database.write(partial(advance, url=key, event_id=after))
                waiting -= 1
                self._set_pending(hook.url, waiting)

    async def _deliver(self, hook: WebhookConfig, event: Event) -> None:
        """Return once `event` is delivered or given up; retry with backoff until then."""
        body = json.dumps(as_json(event), separators=(",", ":")).encode()
        secret = hook.secret.get_secret_value()
        failures = 0
        while True:
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "wg-fleet",
                "X-WG-Fleet-Event": event.type,
                "X-WG-Fleet-Delivery": str(event.id),
                "X-WG-Fleet-Timestamp": timestamp,
                "X-WG-Fleet-Signature": sign(secret, timestamp, body),
            }
            try:
                response = await self._client.post(hook.url, content=body, headers=headers)
                problem = None if response.is_success else f"answered {response.status_code}"
            except httpx.HTTPError as error:
                problem = f"failed: {type(error).__name__}: {error}"
            if problem is None:
                self._metrics.webhook_delivered("delivered")
                return
            self._metrics.webhook_delivered("failed")
            failures += 1
            if self._clock() - event.time > self._config.webhook_give_up:
                logger.error(
                    "webhook %s: gave up on event %d (%s) after %d tries: it %s",
                    hook.url,
                    event.id,
                    event.type,
                    failures,
                    problem,
                )
                self._metrics.webhook_delivered("given_up")
                return
            wait = backoff(failures)
            log = logger.warning if failures == 1 or failures % 10 == 0 else logger.debug
            log("webhook %s: event %d %s; retrying in %g s", hook.url, event.id, problem, wait)
            await asyncio.sleep(wait)

"""HTTP Basic for admins on every route but registration, pings and /health, built so
that nobody who can reach the port stalls the service by guessing passwords.

argon2 is slow on purpose (tens of MiB and a good fraction of a second per check), so:
- a check runs in one worker thread of its own, never on the event loop, at the
  lowest CPU priority (nice 19) where that is allowed (the systemd unit's seccomp
  filter forbids it), and runs at most `MAX_DUTY` of the time once a burst of `BURST`
  seconds of checks is spent (a typo costs no wait). At most `MAX_PENDING`
  checks wait for it; an attempt beyond that gets 429 at once;
- a wrong username is checked against the configured hash all the same (a dummy
  check that costs what a wrong password costs, by construction), so usernames cannot
  be told apart by timing;
- failed attempts are limited per source (an IPv4 address or the IPv6 /64; behind a
  `trusted_proxies` proxy, the forwarded client): `FAILURES` per `FAILURE_WINDOW`, then
  429 with Retry-After without any argon2 work;
- every refusal of a credential is answered `REFUSAL_DELAY` after the request arrived
  at the earliest, so a client cannot make the loop churn out cheap refusals;
- failures are logged with their source, never with the password (nor the username,
  which is now and then a password typed into the wrong field);
- a verified credential is remembered as a salted digest (never the password), and
  later requests with it skip argon2.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from access import RateLimiter
from addresses import IPAddress, normalize_ip, resolve_client_ip
from config import AdminConfig, RateLimit
from literals import IPNetwork

logger = logging.getLogger(__name__)

OPEN_ROUTES = re.compile(r"^(POST /fleet/[^/]+/(register|ping|leave)|GET /health)$")
VERIFIED_CACHE = 64  # credential digests remembered after a successful argon2 check
MAX_PENDING = 8  # argon2 checks running or waiting at once
MAX_DUTY = 0.1  # the largest share of the time that argon2 checks may run…
BURST = 2.0  # …after a burst of this many seconds of checks
FAILURES = 10  # failed attempts per source within FAILURE_WINDOW
FAILURE_WINDOW = timedelta(minutes=5)
REFUSAL_DELAY = 1.0  # seconds: the earliest a refused credential is answered
LOWEST_PRIORITY = 19


def hash_password(password: str) -> str:
    return PasswordHasher().hash(password)


def _lower_priority() -> None:
    """Run this worker thread at nice 19, so that argon2 yields the CPU to the event
    loop and the other threads (on Linux a thread has a nice value of its own)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    except OSError:  # pragma: no cover - not allowed here; argon2 still stays off the loop
        logger.debug("could not lower the priority of the password worker")


def parse_basic(header: bytes) -> tuple[bytes, bytes] | None:
    """(username, password) of an HTTP Basic `Authorization` value, or None."""
    scheme, _, encoded = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        username, colon, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return (username, password) if colon else None


class AdminAuth:
    """ASGI middleware: HTTP Basic with the configured argon2 hash (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        admin: AdminConfig,
        trusted_proxies: tuple[IPNetwork, ...] = (),
        ipv6_prefix: int = 64,
    ) -> None:
        self.app = app
        self._username = admin.username.encode()
        self._hash = admin.password_hash.get_secret_value()
        self._hasher = PasswordHasher()
        self._salt = hashlib.sha256(self._hash.encode()).digest()
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._trusted = trusted_proxies
        self._failures = RateLimiter(
            RateLimit(requests=FAILURES, per=FAILURE_WINDOW, ipv6_prefix=ipv6_prefix)
        )
        self._worker: ThreadPoolExecutor | None = None
        self._pending = 0
        self._budget = BURST  # (worker thread) seconds of checks allowed now
        self._budget_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or OPEN_ROUTES.match(f"{scope['method']} {scope['path']}"):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        header = dict(scope["headers"]).get(b"authorization")
        if header is None:  # no credential tried: the browser's first request
            await self._refuse(scope, receive, send)
            return
        credential = parse_basic(header)
        digest = b""
        if credential is not None:
            username, password = credential
            digest = hmac.new(self._salt, username + b"\0" + password, hashlib.sha256).digest()
            if digest in self._verified:
                self._verified.move_to_end(digest)
                await self.app(scope, receive, send)
                return
        source = self._source(scope)
        wait = self._failures.waiting(source)
        if wait:
            await self._refuse(
                scope,
                receive,
                send,
                started,
                f"Too many failed admin log-ins from {self._failures.source(source)}; "
                f"try again in {wait} s.",
                wait,
            )
            return
        if credential is not None and self._pending >= MAX_PENDING:
            await self._refuse(
                scope,
                receive,
                send,
                started,
                "Too many admin log-ins are being checked at once; try again in 1 s.",
                1,
            )
            return
        if credential is not None and await self._check(*credential):
            self._remember(digest)
            await self.app(scope, receive, send)
            return
        self._failures.retry_after(source)
        logger.warning("failed admin log-in from %s", source)
        await self._refuse(scope, receive, send, started)

    def _source(self, scope: Scope) -> IPAddress:
        client = scope.get("client")
        peer = client[0] if client else "::"
        forwarded = [
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
        ]
        try:
            return resolve_client_ip(peer, forwarded, self._trusted)[0]
        except ValueError:
            try:
                return normalize_ip(peer)
            except ValueError:
                return normalize_ip("::")

    async def _check(self, username: bytes, password: bytes) -> bool:
        """argon2 in the worker thread; the username is compared after it, so that a
        wrong one costs the same check."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="wg-fleet-argon2", initializer=_lower_priority
            )
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            password_ok = await loop.run_in_executor(self._worker, self._verify, password)
        finally:
            self._pending -= 1
        return hmac.compare_digest(username, self._username) and password_ok

    def _verify(self, password: bytes) -> bool:
        """In the worker thread: one argon2 check, after the rest (if any) that keeps
        the checks' share of the time at `MAX_DUTY` at most."""
        # A budget of check time, refilled at MAX_DUTY seconds per second up to
        # BURST: an occasional check runs at once, a stream of them at MAX_DUTY. Wall
        # time, not this thread's CPU time: argon2 computes its lanes in threads of
        # its own.
        now = time.monotonic()
        budget = min(BURST, self._budget + (now - self._budget_at) * MAX_DUTY)
        if budget < 0:
            time.sleep(-budget / MAX_DUTY)
            budget = 0.0
        begun = time.monotonic()
        try:
            return self._hasher.verify(self._hash, password)
        except (VerificationError, InvalidHashError):
            return False
        finally:
            self._budget_at = time.monotonic()
            self._budget = budget - (self._budget_at - begun)

    def _remember(self, digest: bytes) -> None:
        self._verified[digest] = None
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: float | None = None,
        detail: str = "Admin credentials are required (HTTP Basic).",
        retry_after: int | None = None,
    ) -> None:
        if started is not None:
            await asyncio.sleep(max(0.0, started + REFUSAL_DELAY - time.monotonic()))
        headers = {"WWW-Authenticate": 'Basic realm="wg-fleet", charset="UTF-8"'}
        if retry_after is not None:
            headers = {"Retry-After": str(retry_after)}
        status = 401 if retry_after is None else 429
        await JSONResponse({"detail": detail}, status_code=status, headers=headers)(
            scope, receive, send
        )

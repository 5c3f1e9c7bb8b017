"""Optional access control, all off unless configured.

- `admin`: HTTP Basic with an argon2 hash on everything except registration, pings, leaving and
  /health (clients and health checks never carry admin credentials);
- per fleet `registration_token` (Bearer, compared in constant time) and
  `register_from` (CIDRs allowed to register);
- `register_rate_limit`: registrations per source address (429 with Retry-After).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from addresses import IPAddress, is_trusted
from config import AdminConfig, Config, FleetConfig, RateLimit
from errors import Forbidden, TooManyRequests, Unauthorized

OPEN_ROUTES = re.compile(r"^(POST /fleet/[^/]+/(register|ping|leave)|GET /health)$")
RATE_LIMIT_ADDRESSES = 100_000  # addresses remembered by the rate limiter at most
VERIFIED_CACHE = 64  # credential digests remembered after a successful argon2 check


def hash_password(password: str) -> str:
    return PasswordHasher().hash(password)


class AdminAuth:
    """ASGI middleware: HTTP Basic on every route but registration, pings, leaving and
    /health.

    argon2 is slow on purpose, so a verified credential is remembered (as a salted
    digest, never the password) and later requests with it skip the hash.
    """

    def __init__(self, app: ASGIApp, admin: AdminConfig) -> None:
        self.app = app
        self._username = admin.username.encode()
        self._hash = admin.password_hash.get_secret_value()
        self._hasher = PasswordHasher()
        self._salt = hashlib.sha256(self._hash.encode()).digest()
        self._verified: OrderedDict[bytes, None] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or OPEN_ROUTES.match(f"{scope['method']} {scope['path']}"):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        if self._allows(header):
            await self.app(scope, receive, send)
            return
        refusal = JSONResponse(
            {"detail": "Admin credentials are required (HTTP Basic)."},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="wg-fleet", charset="UTF-8"'},
        )
        await refusal(scope, receive, send)

    def _allows(self, header: bytes) -> bool:
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            username, _, password = base64.b64decode(encoded, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        digest = hmac.new(self._salt, username + b"\0" + password, hashlib.sha256).digest()
        if digest in self._verified:
            self._verified.move_to_end(digest)
            return True
        if not hmac.compare_digest(username, self._username):
            return False
        try:
            self._hasher.verify(self._hash, password)
        except (VerificationError, InvalidHashError):
            return False
        self._verified[digest] = None
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return True


class RateLimiter:
    """A token bucket per source address: `requests` per `per`, refilled continuously."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(limit.requests)
        self._rate = limit.requests / limit.per.total_seconds()
        self._clock = clock
        self._buckets: OrderedDict[IPAddress, tuple[float, float]] = OrderedDict()

    def retry_after(self, address: IPAddress) -> int:
        """0 when a request from `address` may go ahead now (and count it), else the
        seconds to wait."""
        now = self._clock()
        tokens, then = self._buckets.pop(address, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - then) * self._rate)
        if tokens >= 1:
            self._buckets[address] = (tokens - 1, now)
            wait = 0
        else:
            self._buckets[address] = (tokens, now)
            wait = math.ceil((1 - tokens) / self._rate)
        if len(self._buckets) > RATE_LIMIT_ADDRESSES:
            self._buckets.popitem(last=False)
        return wait


def check_registration(
    settings: FleetConfig,
    fleet: str,
    source: IPAddress,
    authorization: str | None,
    limiter: RateLimiter | None,
) -> None:
    """Raise `Unauthorized`, `Forbidden` or `TooManyRequests` when the fleet's rules say no."""
    if settings.registration_token is not None:
        scheme, _, token = (authorization or "").partition(" ")
        expected = settings.registration_token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected):
            raise Unauthorized(
                f"Registering in fleet {fleet} needs its token: "
                "send `Authorization: Bearer <registration_token>`."
            )
    if settings.register_from and not is_trusted(source, settings.register_from):
        raise Forbidden(f"Registering in fleet {fleet} is not allowed from {source}.")
    if limiter is not None:
        wait = limiter.retry_after(source)
        if wait:
            raise TooManyRequests(
                f"Too many registrations from {source}; try again in {wait} s.", wait
            )


def is_unprotected(config: Config) -> bool:
    """No admin password and no fleet with a token or an address restriction."""
    return config.admin is None and not any(
        fleet.registration_token or fleet.register_from for fleet in config.fleets.values()
    )


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

"""Optional access control for registration, all off unless configured.

- per fleet `registration_token` (Bearer, compared in constant time) and
  `register_from` (CIDRs allowed to register);
- `register_rate_limit`: registrations per source (429 with Retry-After), an IPv6
  source counted by its /64 (`ipv6_prefix`).

The admin password (HTTP Basic on the dashboard) is `admin_auth.py`'s.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from addresses import IPAddress, is_trusted
from config import Config, FleetConfig, RateLimit
from errors import Forbidden, TooManyRequests, Unauthorized

RATE_LIMIT_ADDRESSES = 100_000  # sources remembered by the rate limiter at most


Source = IPAddress | ipaddress.IPv6Network


def source_of(address: IPAddress, ipv6_prefix: int) -> Source:
    """What a limit counts as one source: an IPv4 address, or the IPv6 network of
    `ipv6_prefix` bits around an IPv6 address (a host usually holds a whole /64)."""
    if isinstance(address, ipaddress.IPv6Address) and ipv6_prefix < 128:
        return ipaddress.IPv6Network(f"{address}/{ipv6_prefix}", strict=False)
    return address


class RateLimiter:
    """A token bucket per source (see `source_of`): `requests` per `per`, refilled
    continuously. At most `RATE_LIMIT_ADDRESSES` sources are remembered, the least
    recently seen forgotten first."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(limit.requests)
        self._rate = limit.requests / limit.per.total_seconds()
        self._prefix = limit.ipv6_prefix
        self._clock = clock
        self._buckets: OrderedDict[Source, tuple[float, float]] = OrderedDict()

    def source(self, address: IPAddress) -> Source:
        return source_of(address, self._prefix)

    def retry_after(self, address: IPAddress) -> int:
        """0 when a request from `address` may go ahead now (and count it), else the
        seconds to wait."""
        return self._take(address, consume=True)

    def waiting(self, address: IPAddress) -> int:
        """The seconds `address` must wait before its next request counts; 0 when it
        may go ahead. Counts nothing."""
        return self._take(address, consume=False)

    def _take(self, address: IPAddress, *, consume: bool) -> int:
        key = self.source(address)
        now = self._clock()
        tokens, then = self._buckets.pop(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - then) * self._rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1 if consume else tokens, now)
            wait = 0
        else:
            self._buckets[key] = (tokens, now)
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
    """Raise `TooManyRequests`, `Unauthorized` or `Forbidden` when the fleet's rules say
    no. Every attempt counts toward the rate limit, a wrong token included: the limit
    is what keeps a token from being guessed."""
    if limiter is not None:
        wait = limiter.retry_after(source)
        if wait:
            raise TooManyRequests(
                f"Too many registrations from {limiter.source(source)}; try again in {wait} s.",
                wait,
            )
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

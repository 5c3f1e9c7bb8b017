"""Registration abuse: the rate limit counts an IPv6 host by its /64 and counts wrong
tokens; registering a known key again is not activity."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

import pruning
from access import RateLimiter
from config import ConfigError, RateLimit
from database import Client
from tests.conftest import FLEET, Running
from tests.fakes import FakeClock
from wireguard import generate_keypair

StartApp = Callable[..., Any]
TOKEN = "s3cret-registration-token"


async def register_from(running: Running, source: str, **headers: str) -> int:
    async with running.client(source) as http:
        response = await http.post(f"/fleet/{FLEET}/register", headers=headers)
    return response.status_code


def test_an_ipv6_source_is_counted_by_its_64() -> None:
    limiter = RateLimiter(RateLimit(requests=2, per=timedelta(minutes=1)), clock=lambda: 0.0)
    rotating = [ipaddress.ip_address(f"2001:db8:1:2::{n:x}") for n in range(1, 4)]
    assert [limiter.retry_after(a) for a in rotating] == [0, 0, 30]
    assert limiter.retry_after(ipaddress.ip_address("2001:db8:1:3::1")) == 0  # next /64
    assert str(limiter.source(rotating[0])) == "2001:db8:1:2::/64"
    assert limiter.retry_after(ipaddress.ip_address("192.0.2.1")) == 0  # IPv4: the address
    assert limiter.retry_after(ipaddress.ip_address("192.0.2.2")) == 0


def test_the_ipv6_prefix_is_configurable() -> None:
    limit = RateLimit(requests=1, per=timedelta(minutes=1), ipv6_prefix=128)
    limiter = RateLimiter(limit, clock=lambda: 0.0)
    assert limiter.retry_after(ipaddress.ip_address("2001:db8::1")) == 0
    assert limiter.retry_after(ipaddress.ip_address("2001:db8::2")) == 0
    assert limiter.retry_after(ipaddress.ip_address("2001:db8::2")) == 60


async def test_rotating_addresses_within_a_64_share_one_limit(start_app: StartApp) -> None:
    async with start_app(register_rate_limit={"requests": 2, "per": "1m"}) as running:
        statuses = [await register_from(running, f"2001:db8:5:6::{n}") for n in range(1, 5)]
        async with running.client("2001:db8:5:6::99") as http:
            refused = await http.post(f"/fleet/{FLEET}/register")
        elsewhere = await register_from(running, "2001:db8:5:7::1")
    assert statuses == [200, 200, 429, 429]
    assert refused.json() == {
        "detail": "Too many registrations from 2001:db8:5:6::/64; try again in 30 s."
    }
    assert elsewhere == 200


async def test_wrong_tokens_count_toward_the_rate_limit(start_app: StartApp) -> None:
    alpha = {
        "ip6": "fd00:1::1",
        "subnet": "fd00:1::/64",
        "external_ip": "192.0.2.1",
        "port": 51820,
        "registration_token": TOKEN,
    }
    guesses = [f"Bearer guess-number-{n:04d}" for n in range(3)]
    async with start_app(
        register_rate_limit={"requests": 3, "per": "1m"}, fleets={FLEET: alpha}
    ) as running:
        wrong = [await register_from(running, "192.0.2.9", authorization=g) for g in guesses]
        right = await register_from(running, "192.0.2.9", authorization=f"Bearer {TOKEN}")
        other = await register_from(running, "192.0.2.10", authorization=f"Bearer {TOKEN}")
    assert wrong == [401, 401, 401]
    assert right == 429  # the guesses used up the budget of 192.0.2.9
    assert other == 200


async def test_registering_a_known_key_again_does_not_keep_it_alive(
    start_app: StartApp, clock: FakeClock
) -> None:
    keys = generate_keypair()
    async with start_app(prune_timeout="10m") as running:
        async with running.client("192.0.2.8") as http:
            first = await http.post(
                f"/fleet/{FLEET}/register", json={"public_key": keys.public_key}
            )
            for _ in range(3):
                clock.advance(minutes=4)
                again = await http.post(
                    f"/fleet/{FLEET}/register", json={"public_key": keys.public_key}
                )
                assert again.json()["address"] == first.json()["address"]
        report = await pruning.sweep_fleet(running.context, FLEET)
        left = await running.context.database.read(
            lambda session: list(session.scalars(select(Client.public_key)))
        )
    assert report.pruned == 1  # 12 minutes after its registration, re-registered or not
    assert left == []


@pytest.mark.parametrize("prefix", [0, 129, "64"])
def test_a_bad_ipv6_prefix_is_a_config_error(make_config: Callable[..., Any], prefix: Any) -> None:
    with pytest.raises(ConfigError, match=r"register_rate_limit\.ipv6_prefix"):
        make_config(register_rate_limit={"requests": 1, "per": "1m", "ipv6_prefix": prefix})

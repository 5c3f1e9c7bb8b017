"""Optional access control: admin password, registration token, allowed sources, rate limit."""

from __future__ import annotations

import base64
import ipaddress
import logging
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from access import RateLimiter
from admin_auth import hash_password
from config import RateLimit
from tests.conftest import FLEET

StartApp = Callable[..., Any]
PASSWORD = "correct horse battery staple"
TOKEN = "s3cret-registration-token"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def with_fleet(make_config: Callable[..., Any], **settings: Any) -> Any:
    """The test config, its fleets given `settings` through the config's validation."""
    alpha = {"ip6": "fd00:1::1", "subnet": "fd00:1::/64", "external_ip": "192.0.2.1"}
    beta = {"ip6": "fd00:2::1", "subnet": "fd00:2::/64", "external_ip": "192.0.2.1"}
    return make_config(
        fleets={FLEET: {**alpha, "port": 51820, **settings}, "beta": {**beta, "port": 51821}}
    )


@pytest.mark.parametrize(
    "path", ["/", f"/fleet/{FLEET}", "/api/fleets", "/metrics", "/openapi.json"]
)
async def test_admin_pages_need_the_password(
    start_app: StartApp, password_hash: str, path: str
) -> None:
    admin = {"username": "admin", "password_hash": password_hash}
    async with start_app(admin=admin) as running, running.client() as http:
        anonymous = await http.get(path)
        wrong = await http.get(path, headers=basic("admin", "guess"))
        allowed = await http.get(path, headers=basic("admin", PASSWORD))
        again = await http.get(path, headers=basic("admin", PASSWORD))
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert anonymous.json() == {"detail": "Admin credentials are required (HTTP Basic)."}
    assert wrong.status_code == 401
    assert allowed.status_code == 200
    assert again.status_code == 200


async def test_clients_and_health_checks_need_no_admin_password(
    start_app: StartApp, password_hash: str
) -> None:
    admin = {"username": "admin", "password_hash": password_hash}
    async with start_app(admin=admin) as running, running.client() as http:
        registered = await http.post(f"/fleet/{FLEET}/register")
        health = await http.get("/health")
        async with running.in_tunnel(registered.json()["address"]) as tunnel:
            ping = await tunnel.post(f"/fleet/{FLEET}/ping", json={})
    assert (registered.status_code, health.status_code, ping.status_code) == (200, 200, 200)


async def test_a_registration_token_is_required_when_configured(
    start_app: StartApp, make_config: Callable[..., Any]
) -> None:
    config = with_fleet(make_config, registration_token=TOKEN)
    async with start_app(config) as running, running.client() as http:
        missing = await http.post(f"/fleet/{FLEET}/register")
        wrong = await http.post(
            f"/fleet/{FLEET}/register", headers={"Authorization": "Bearer nope"}
        )
        right = await http.post(
            f"/fleet/{FLEET}/register", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        other_fleet = await http.post("/fleet/beta/register")
    assert missing.status_code == wrong.status_code == 401
    assert missing.json() == {
        "detail": "Registering in fleet alpha needs its token: "
        "send `Authorization: Bearer <registration_token>`."
    }
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert right.status_code == 200
    assert other_fleet.status_code == 200


async def test_register_from_limits_where_clients_may_register(
    start_app: StartApp, make_config: Callable[..., Any]
) -> None:
    config = with_fleet(make_config, register_from=["198.51.100.0/24"])
    async with start_app(config) as running:
        async with running.client("192.0.2.9") as outside:
            refused = await outside.post(f"/fleet/{FLEET}/register")
        async with running.client("198.51.100.20") as inside:
            allowed = await inside.post(f"/fleet/{FLEET}/register")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Registering in fleet alpha is not allowed from 192.0.2.9."}
    assert allowed.status_code == 200


async def test_registrations_are_rate_limited_per_address(start_app: StartApp) -> None:
    limit = {"requests": 3, "per": "1m"}
    async with start_app(register_rate_limit=limit) as running:
        async with running.client("192.0.2.9") as busy:
            answers = [await busy.post(f"/fleet/{FLEET}/register") for _ in range(4)]
        async with running.client("192.0.2.10") as other:
            unaffected = await other.post(f"/fleet/{FLEET}/register")
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].headers["retry-after"] == "20"
    assert answers[3].json() == {
        "detail": "Too many registrations from 192.0.2.9; try again in 20 s."
    }
    assert unaffected.status_code == 200


def test_the_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(requests=2, per=timedelta(seconds=10)), clock=lambda: now[0])
    address = ipaddress.ip_address("192.0.2.1")
    assert [limiter.retry_after(address) for _ in range(3)] == [0, 0, 5]
    now[0] = 5.0
    assert limiter.retry_after(address) == 0
    assert limiter.retry_after(address) == 5


async def test_an_open_service_on_a_public_address_warns(
    make_config: Callable[..., Any], start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with start_app(make_config(listen={"host": "::"})):
        pass
    assert "no access control is configured and wg-fleet listens on ::" in caplog.text
    caplog.clear()
    async with start_app(make_config(listen={"host": "127.0.0.1"})):
        pass
    assert "no access control" not in caplog.text


def test_hash_password_prints_only_a_verifiable_hash() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "hash-password"],
        input=f"{PASSWORD}\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.count("\n") == 1
    assert PasswordHasher().verify(result.stdout.strip(), PASSWORD)
    empty = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "hash-password"],
        input="\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert (empty.returncode, empty.stderr) == (2, "hash-password: the password is empty.\n")

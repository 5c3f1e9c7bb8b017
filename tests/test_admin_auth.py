"""admin_auth.py: password guessing cannot stall the service, is limited per source,
cannot tell usernames apart by timing, and leaves no password in the logs."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

import admin_auth
from admin_auth import hash_password
from tests.conftest import Running

StartApp = Callable[..., Any]
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def admin() -> dict[str, str]:
    return {"username": "admin", "password_hash": hash_password(PASSWORD)}


@pytest.fixture(autouse=True)
def no_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """No rest between argon2 checks, except where a test asks for it."""
    monkeypatch.setattr(admin_auth, "MAX_DUTY", 1.0)


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bytes | str]:
    """Every argon2 verification made, by the password it checked."""
    checked: list[bytes | str] = []
    original = PasswordHasher.verify

    def counting(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        checked.append(password)
        return original(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    return checked


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def get(running: Running, source: str, headers: dict[str, str]) -> httpx.Response:
    async with running.client(source) as http:
        return await http.get("/api/fleets", headers=headers)


async def test_argon2_runs_off_the_event_loop(start_app: StartApp, admin: dict[str, str]) -> None:
    gaps: list[float] = []
    async with start_app(admin=admin) as running:
        guesses = asyncio.gather(
            *(get(running, f"192.0.2.{n}", basic("admin", f"guess{n}")) for n in range(1, 5))
        )
        task = asyncio.ensure_future(guesses)
        before = time.monotonic()
        while not task.done():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - before)
            before = now
        answers = await task
        async with running.client() as http:
            health = await http.get("/health")
    assert [a.status_code for a in answers] == [401] * 4
    assert health.status_code == 200
    # One argon2 check takes 0.2 s or more; on the loop it would stall it that long.
    assert max(gaps) < 0.15, sorted(gaps)[-5:]


async def test_failed_attempts_are_limited_per_source(
    start_app: StartApp,
    admin: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    verifications: list[bytes | str],
) -> None:
    monkeypatch.setattr(admin_auth, "FAILURES", 3)
    monkeypatch.setattr(admin_auth, "REFUSAL_DELAY", 0.0)
    async with start_app(admin=admin) as running:
        wrong = [await get(running, "192.0.2.9", basic("admin", f"guess{n}")) for n in range(3)]
        checked = len(verifications)
        limited = await get(running, "192.0.2.9", basic("admin", "guess-again"))
        limited_right = await get(running, "192.0.2.9", basic("admin", PASSWORD))
        same_64 = await get(running, "2001:db8::1", basic("admin", "x"))
        other = await get(running, "192.0.2.10", basic("admin", PASSWORD))
    assert [a.status_code for a in wrong] == [401] * 3
    assert checked == 3
    assert limited.status_code == limited_right.status_code == 429
    wait = limited.headers["retry-after"]
    assert 0 < int(wait) <= 100  # 3 failures per 5 minutes refill one per 100 s
    assert limited.json() == {
        "detail": f"Too many failed admin log-ins from 192.0.2.9; try again in {wait} s."
    }
    assert len(verifications) == 3 + 1 + 1  # no argon2 for a limited source
    assert same_64.status_code == 401
    assert other.status_code == 200


async def test_ipv6_sources_are_limited_by_their_64(
    start_app: StartApp, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_auth, "FAILURES", 2)
    monkeypatch.setattr(admin_auth, "REFUSAL_DELAY", 0.0)
    async with start_app(admin=admin) as running:
        statuses = [
            (await get(running, f"2001:db8:1:2::{n}", basic("admin", "x"))).status_code
            for n in range(1, 4)
        ]
        elsewhere = await get(running, "2001:db8:1:3::1", basic("admin", "x"))
    assert statuses == [401, 401, 429]
    assert elsewhere.status_code == 401


async def test_a_wrong_username_costs_what_a_wrong_password_costs(
    start_app: StartApp,
    admin: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    verifications: list[bytes | str],
) -> None:
    monkeypatch.setattr(admin_auth, "REFUSAL_DELAY", 0.0)
    timings: dict[str, list[float]] = {"user": [], "password": []}
    async with start_app(admin=admin) as running:
        for n in range(3):
            for kind, headers in (
                ("user", basic(f"root{n}", PASSWORD)),
                ("password", basic("admin", f"guess{n}")),
            ):
                started = time.perf_counter()
                answer = await get(running, f"192.0.2.{n + 20}", headers)
                timings[kind].append(time.perf_counter() - started)
                assert answer.status_code == 401
    assert len(verifications) == 6  # the wrong usernames were checked too
    user, password = sorted(timings["user"])[1], sorted(timings["password"])[1]
    assert user > 0.5 * password, timings


async def test_refusals_wait_and_failures_are_logged_without_the_password(
    start_app: StartApp, admin: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with start_app(admin=admin) as running:
        started = time.perf_counter()
        wrong = await get(running, "192.0.2.33", basic("admin", "hunter2-secret"))
        took = time.perf_counter() - started
        garbage = await get(running, "192.0.2.33", {"Authorization": "Basic !!!"})
        anonymous = await get(running, "192.0.2.33", {})
    assert wrong.status_code == garbage.status_code == anonymous.status_code == 401
    assert took >= admin_auth.REFUSAL_DELAY
    assert "failed admin log-in from 192.0.2.33" in caplog.text
    assert "hunter2-secret" not in caplog.text
    assert base64.b64encode(b"admin:hunter2-secret").decode() not in caplog.text


async def test_checks_beyond_the_bound_are_refused_at_once(
    start_app: StartApp, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_auth, "MAX_PENDING", 1)
    monkeypatch.setattr(admin_auth, "REFUSAL_DELAY", 0.0)
    async with start_app(admin=admin) as running:
        answers = await asyncio.gather(
            *(get(running, f"192.0.2.{n}", basic("admin", "x")) for n in range(40, 44))
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401, 429, 429, 429]
    busy = next(a for a in answers if a.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    assert busy.json() == {
        "detail": "Too many admin log-ins are being checked at once; try again in 1 s."
    }


async def test_the_worker_rests_between_checks(
    start_app: StartApp, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_auth, "MAX_DUTY", 0.5)
    monkeypatch.setattr(admin_auth, "BURST", 0.0)
    monkeypatch.setattr(admin_auth, "REFUSAL_DELAY", 0.0)
    spans: list[tuple[float, float]] = []
    original = PasswordHasher.verify

    def timed(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        begun = time.monotonic()
        try:
            return original(self, hash, password)
        finally:
            spans.append((begun, time.monotonic()))

    monkeypatch.setattr(PasswordHasher, "verify", timed)
    async with start_app(admin=admin) as running:
        await asyncio.gather(
            *(get(running, f"192.0.2.{n}", basic("admin", "x")) for n in range(60, 63))
        )
    assert len(spans) == 3
    for (begun, ended), (following, _) in itertools.pairwise(spans):
        # At half the time: a rest at least as long as the check before it.
        assert following - ended >= 0.9 * (ended - begun)

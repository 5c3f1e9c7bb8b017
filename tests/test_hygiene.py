"""Secrets hygiene around a registration: no caching of the answer, no private key in a
repr, no core dumps from the unit, and no JavaScript from a CDN."""

from __future__ import annotations

import configparser
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routes import RegisterResponse
from tests.conftest import FLEET
from wireguard import generate_keypair, read_private_key

StartApp = Callable[..., Any]
UNIT = Path(__file__).resolve().parents[1] / "contrib" / "systemd" / "wg-fleet.service"


async def test_the_registration_answer_is_not_cached(start_app: StartApp) -> None:
    async with start_app() as running, running.client() as http:
        generated = await http.post(f"/fleet/{FLEET}/register")
        own = await http.post(
            f"/fleet/{FLEET}/register", json={"public_key": generate_keypair().public_key}
        )
        refused = await http.post("/fleet/nope/register")
    assert generated.status_code == own.status_code == 200
    assert generated.headers["cache-control"] == own.headers["cache-control"] == "no-store"
    assert "PrivateKey" in generated.json()["config"]
    assert refused.status_code == 404


async def test_no_repr_of_a_registration_shows_its_private_key(start_app: StartApp) -> None:
    async with start_app() as running:
        registration = await running.context.registry.register(
            FLEET, None, ipaddress.ip_address("192.0.2.5")
        )
    private_key = read_private_key(registration.config)
    assert private_key is not None
    answer = RegisterResponse(
        config=registration.config,
        address=str(registration.address),
        public_key=registration.public_key,
    )
    for shown in (repr(registration), str(registration), repr(answer), str(answer)):
        assert private_key not in shown
        assert registration.public_key in shown  # the rest is still there to debug with


def test_the_unit_allows_no_core_dumps() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    assert unit["Service"].get("LimitCORE") == "0"


async def test_no_page_loads_javascript_from_elsewhere(start_app: StartApp) -> None:
    async with start_app() as running, running.client() as http:
        docs = await http.get("/docs")
        redoc = await http.get("/redoc")
        schema = await http.get("/openapi.json")
        pages = [await http.get(path) for path in ("/", f"/fleet/{FLEET}", "/fleet/nope")]
    assert docs.status_code == redoc.status_code == 404
    assert schema.status_code == 200
    assert "/fleet/{fleet}/register" in schema.json()["paths"]
    for page in pages:
        assert re.search(r"<script|https?://", page.text) is None, page.text[:500]

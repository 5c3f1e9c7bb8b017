"""The dashboard's remove and remove-and-ban in a real browser: a confirmation page, a
CSRF-protected form, and the client gone from the table, the interface and the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from admin_auth import hash_password
from tests.browser.conftest import LiveServer, fleet_rows

try:
    from playwright.sync_api import Browser, expect
except ImportError:  # pragma: no cover - the fixtures skip without Playwright
    Browser = Any  # type: ignore[assignment,misc]

Serve = Callable[..., LiveServer]
PASSWORD = "correct horse battery staple"


def test_remove_and_ban_from_the_fleet_page(serve: Serve, browser: Browser) -> None:
    rows = fleet_rows(12)
    admin = {"username": "admin", "password_hash": hash_password(PASSWORD)}
    live = serve(rows, admin=admin)
    context = browser.new_context(http_credentials={"username": "admin", "password": PASSWORD})
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        victim, keeper = rows[0], rows[1]
        page.goto(f"{live.url}/fleet/{victim.fleet}")
        row = page.locator("#clients tbody tr", has_text=victim.address)
        with page.expect_navigation():
            row.get_by_role("link", name="remove and ban").click()
        expect(page.locator("h1")).to_contain_text(f"Remove and ban {victim.address}?")
        # Cancel first: nothing happens.
        with page.expect_navigation():
            page.get_by_role("link", name="Cancel").click()
        expect(page.locator("#clients tbody tr", has_text=victim.address)).to_have_count(1)
        with page.expect_navigation():
            page.locator("#clients tbody tr", has_text=victim.address).get_by_role(
                "link", name="remove and ban"
            ).click()
        with page.expect_navigation():
            page.locator("#confirm").click()
        assert page.url.startswith(f"{live.url}/fleet/{victim.fleet}?")
        expect(page.locator("#clients tbody tr", has_text=victim.address)).to_have_count(0)
        expect(page.locator("#clients tbody tr", has_text=keeper.address)).to_have_count(1)
        expect(page.locator("#events")).to_contain_text("banned")
        bans = page.request.get(f"{live.url}/api/bans").json()["bans"]
        assert [ban["public_key"] for ban in bans] == [victim.public_key]
        assert victim.public_key not in live.fake_wg.interfaces[f"wg_{victim.fleet}"].peers
        # A form posted without the page's token (another site's forgery) is refused.
        forged = page.request.post(
            f"{live.url}/fleet/{keeper.fleet}/clients/{keeper.address}/remove",
            form={"csrf": "forged", "ban": "false"},
        )
        assert forged.status == 403
        assert keeper.public_key in live.fake_wg.interfaces[f"wg_{keeper.fleet}"].peers
    finally:
        context.close()

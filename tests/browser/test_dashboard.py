"""The dashboard in a real browser: navigate, search, page, refresh, and no stored XSS."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from database import Client
from tests.browser.conftest import NOW, LiveServer, fleet_rows, save
from tests.test_listing import client_row, expected_order

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - the fixtures skip without Playwright
    Page = Any  # type: ignore[assignment,misc]

Serve = Callable[[Sequence[Client]], LiveServer]

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=1">'
ALERT = "<img src=x onerror=alert(1)>"


def column(page: Page, number: int) -> list[str]:
    """The texts of one column (1-based) of the client table's body."""
    return page.locator(f"#clients tbody tr td:nth-child({number})").all_inner_texts()


def addresses(page: Page) -> list[str]:
    return column(page, 2)


def click_and_wait(page: Page, name: str) -> None:
    with page.expect_navigation():
        page.get_by_role("link", name=name, exact=True).click()


def dialogs_of(page: Page) -> list[str]:
    """The messages of the dialogs (alert, confirm, prompt) the page opens from now on."""
    messages: list[str] = []

    def dismiss(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    return messages


def online(rows: Sequence[Client]) -> int:
    return sum(
        1 for r in rows if r.last_handshake and (NOW - r.last_handshake).total_seconds() < 180
    )


def test_index_lists_the_fleets_and_links_into_one(serve: Serve, page: Page) -> None:
    live = serve(fleet_rows(250))
    page.goto(f"{live.url}/")

    fleets = page.locator("#fleets tbody tr")
    expect(fleets).to_have_count(2)
    named = sum(1 for r in live.rows if r.hostname)
    assert fleets.nth(0).locator("td").all_inner_texts() == [
        "alpha",
        live.node,
        "wg_alpha",
        "fd00:1::/64",
        "192.0.2.1:51820",
        "250",
        str(online(live.rows)),
        str(named),
    ]
    assert fleets.nth(1).locator("td").all_inner_texts()[5:] == ["0", "0", "0"]
    save(page, "index.png")

    click_and_wait(page, "alpha")
    assert page.url == f"{live.url}/fleet/alpha"
    expect(page.locator("h1")).to_contain_text("Fleet alpha")
    expect(page.locator("#clients tbody tr")).to_have_count(100)
    assert addresses(page) == expected_order(live.rows, "hostname")[:100]
    assert set(column(page, 8)) == {"online", "offline"}
    save(page, "fleet.png")
    if os.environ.get("WG_FLEET_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOT))
    assert (Path(save(page, "fleet-top.png", full_page=False))).stat().st_size > 10_000


def test_typing_a_search_and_submitting_filters_the_rows(serve: Serve, page: Page) -> None:
    live = serve(fleet_rows(250))
    page.goto(f"{live.url}/fleet/alpha")

    box = page.get_by_role("searchbox", name="Search")
    box.fill("excavator1")
    with page.expect_navigation():
        box.press("Enter")

    wanted = [r for r in live.rows if (r.hostname or "").startswith("excavator1")]
    assert "q=excavator1" in page.url
    assert addresses(page) == expected_order(wanted, "hostname")
    assert all(name.startswith("excavator1") for name in column(page, 1))
    expect(box).to_have_value("excavator1")
    save(page, "fleet-search.png")


def test_search_by_address_prefix_with_another_sort(serve: Serve, page: Page) -> None:
    live = serve(fleet_rows(250))
    page.goto(f"{live.url}/fleet/alpha")

    page.get_by_role("searchbox", name="Search").fill("fd00:1::1a")
    page.get_by_role("combobox", name="Sort").select_option("activity")
    with page.expect_navigation():
        page.get_by_role("button", name="Search").click()

    wanted = [r for r in live.rows if r.address.startswith("fd00:1::1a")]
    assert wanted
    assert addresses(page) == expected_order(wanted, "activity")


def test_next_and_previous_page_through_every_client(serve: Serve, page: Page) -> None:
    live = serve(fleet_rows(250))
    order = expected_order(live.rows, "hostname")
    page.goto(f"{live.url}/fleet/alpha")

    assert addresses(page) == order[:100]
    expect(page.locator("nav.pager .disabled")).to_have_text("← Previous")
    click_and_wait(page, "Next →")
    assert addresses(page) == order[100:200]
    click_and_wait(page, "Next →")
    assert addresses(page) == order[200:]
    expect(page.locator("nav.pager .disabled")).to_have_text("Next →")
    click_and_wait(page, "← Previous")
    assert addresses(page) == order[100:200]
    click_and_wait(page, "← Previous")
    assert addresses(page) == order[:100]
    expect(page.locator("nav.pager .disabled")).to_have_text("← Previous")


def test_the_refreshing_page_keeps_its_search(serve: Serve, page: Page) -> None:
    live = serve(fleet_rows(250))
    page.goto(f"{live.url}/fleet/alpha")
    box = page.get_by_role("searchbox", name="Search")
    box.fill("drill")
    with page.expect_navigation():
        box.press("Enter")
    searched = addresses(page)

    refresh = page.locator('meta[http-equiv="refresh"]')
    assert refresh.get_attribute("content") == "15"  # reloads this same URL
    page.reload()

    assert "q=drill" in page.url
    expect(page.get_by_role("searchbox", name="Search")).to_have_value("drill")
    assert addresses(page) == searched
    assert searched
    assert all(name.startswith("drill") for name in column(page, 1))


def test_stored_markup_is_shown_as_text_and_never_run(serve: Serve, page: Page) -> None:
    live = serve(
        [
            client_row(1, hostname=SCRIPT, requested_hostname=IMG, source_ip=IMG),
            client_row(2, hostname=IMG, requested_hostname=SCRIPT, source_ip=SCRIPT),
            client_row(3, hostname=None, requested_hostname=ALERT, source_ip=ALERT),
        ]
    )
    dialogs = dialogs_of(page)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    page.goto(f"{live.url}/fleet/alpha")

    assert page.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == []
    assert not [url for url in requests if url.rstrip("/").endswith("/x")]
    assert page.locator("#clients tbody script, #clients tbody img").count() == 0
    cells = zip(column(page, 1), column(page, 4), strict=True)
    by_address = dict(zip(addresses(page), cells, strict=True))
    assert by_address == {
        live.rows[0].address: (SCRIPT, IMG),
        live.rows[1].address: (IMG, SCRIPT),
        live.rows[2].address: ("(none)", ALERT),
    }
    # The FQDN tooltip carries the stored name as an attribute value, intact.
    assert (
        page.locator("#clients tbody td:first-child span").nth(1).get_attribute("title")
        == f"{SCRIPT}.alpha.fleet.test"
    )


def test_a_search_for_markup_is_echoed_as_text(serve: Serve, page: Page) -> None:
    live = serve([client_row(1, hostname=SCRIPT), client_row(2, hostname="excavator")])
    dialogs = dialogs_of(page)
    page.goto(f"{live.url}/fleet/alpha")

    box = page.get_by_role("searchbox", name="Search")
    box.fill(ALERT)
    with page.expect_navigation():
        box.press("Enter")
    expect(page.locator("#clients tbody")).to_have_text(f"No clients match “{ALERT}”.")
    expect(box).to_have_value(ALERT)

    box.fill(SCRIPT)
    with page.expect_navigation():
        box.press("Enter")
    assert column(page, 1) == [SCRIPT]
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == []

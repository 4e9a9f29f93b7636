"""The dashboard in a real browser: Debian's headless chromium (`/usr/bin/chromium`,
package `chromium`; Playwright never downloads one), driven by Playwright's Python API,
against a real `controparte serve` on loopback. One server and one browser for the
whole directory (package scope: Playwright's event loop ends with the directory, before
other tests call asyncio.run); each test has a browser context of its own (its cookies)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from controparte.model import Link
from controparte.service import Registry
from controparte.service.accounts import Accounts
from controparte.store import Origin
from controparte.store.base import Role
from tests.debtools import tool
from tests.processes import remember_secret
from tests.realserver import ServerProcess, serving

CHROMIUM = "/usr/bin/chromium"
OPERATOR = ("olivia", "operator-password-1")
SUPPORT = ("sam", "support-password-1")
ADMIN_TOKEN = remember_secret(secrets.token_urlsafe(32))
GATEWAY = "name=gw1 ipv4=203.0.113.7 ports=9000-9009"
"""The Live pool's one gateway: LIVE-0003 is placed on it."""
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def seed(registry: Registry) -> None:
    """A few installations, a link between two, and the two accounts."""
    registry.add("ACME-0001", "acme-milano", ipv4="192.0.2.10", port=4443)
    registry.add("BETA-0002", "beta-torino", ipv4="198.51.100.20", ipv6="2001:db8::20", port=4443)
    registry.add("LIVE-0003", "live-cloud", kind="live")  # placed on gw1
    for number in range(5, 80):
        registry.add(f"BULK-{number:04d}", f"bulk-{number}", ipv4=f"192.0.2.{number + 100}")
    with registry.transaction(Origin()) as tx:
        tx.add_link(Link.create("ACME-0001", "BETA-0002", "einvoice"))
    accounts = Accounts(registry.store, 3600)
    accounts.add(OPERATOR[0], Role.OPERATOR, OPERATOR[1])
    accounts.add(SUPPORT[0], Role.SUPPORT, SUPPORT[1])


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("browser") / "data"
    env = {"CONTROPARTE_ADMIN_TOKEN": ADMIN_TOKEN, "CONTROPARTE_LIVE_GATEWAYS": GATEWAY}
    with serving(data, env, seed) as running:
        yield running


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    tool("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser, server: ServerProcess) -> Iterator[BrowserContext]:
    made = browser.new_context(base_url=server.http_url, viewport={"width": 1280, "height": 900})
    yield made
    made.close()


def sign_in(context: BrowserContext, who: tuple[str, str]) -> Page:
    """A page of `context` signed in as `who` (name, password), on the overview."""
    page = context.new_page()
    page.goto("/ui/")
    page.fill("input[name=name]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/")
    return page

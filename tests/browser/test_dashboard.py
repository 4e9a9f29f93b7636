"""The dashboard driven in headless Chromium: sign-in, the overview, search, an
installation's page, an edit (its form token checked, a forged POST refused) and a
support account refused an edit. The overview (after heartbeats and DNS queries, so
that it shows rates) and the installation page are saved as
screenshots in docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import BrowserContext, expect

from tests.agentproc import issue_token
from tests.browser.conftest import OPERATOR, SCREENSHOTS, SUPPORT, sign_in
from tests.realserver import ServerProcess


def test_a_page_needs_a_session_and_a_wrong_password_is_refused(context: BrowserContext) -> None:
    page = context.new_page()
    page.goto("/ui/installations")
    expect(page).to_have_url(re.compile(r"/ui/signin\?next=/ui/installations$"))
    page.fill("input[name=name]", OPERATOR[0])
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_have_text("wrong name or password")
    assert not [c for c in context.cookies() if c["name"] == "controparte_session"]


def test_sign_in_shows_the_overview_and_sets_a_strict_cookie(context: BrowserContext) -> None:
    page = sign_in(context, OPERATOR)
    expect(page.locator("#stats .card").first).to_contain_text("78")  # installations
    expect(page.locator("header .account")).to_have_text(OPERATOR[0])
    (cookie,) = [c for c in context.cookies() if c["name"] == "controparte_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/ui"
    page.click("header button:has-text('Sign out')")
    expect(page).to_have_url(re.compile(r"/ui/signin$"))
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/signin"))


def test_the_overview_shows_rates_on_a_first_visit(
    context: BrowserContext, server: ServerProcess
) -> None:
    token = issue_token(server, "BULK-0007")
    for _ in range(5):
        beat = httpx.post(
            f"{server.http_url}/v1/installations/BULK-0007/heartbeat",
            json={"port": 4443},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert beat.status_code == 200, beat.text
        server.query(server.name("acme-milano"))
    page = sign_in(context, OPERATOR)
    number = re.compile(r"^\d+\.\d$")
    expect(page.locator("#heartbeats .big")).to_have_text(number)
    expect(page.locator("#answers .big")).to_have_text(number)
    expect(page.locator("#heartbeats .muted")).to_have_text(
        re.compile(r"^this process, (since it started|last \d+ s)$")
    )
    serial = page.locator("#serial .big")
    expect(serial).to_have_text(re.compile(r"^\d+$"))
    inside = serial.evaluate(
        "e => e.scrollWidth <= e.clientWidth &&"
        " e.getBoundingClientRect().right <= e.closest('.card').getBoundingClientRect().right"
    )
    assert inside, "the zone serial overflows its card"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)


def test_search_by_label_address_kind_and_pages(context: BrowserContext) -> None:
    page = sign_in(context, OPERATOR)
    page.fill("header input[name=q]", "beta-tor")
    page.press("header input[name=q]", "Enter")
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    expect(page.locator("table.list tbody")).to_contain_text("BETA-0002")
    page.fill("form.filters input[name=q]", "2001:DB8::20")
    page.click("form.filters button")
    expect(page.locator("table.list tbody")).to_contain_text("beta-torino")
    page.fill("form.filters input[name=q]", "")
    page.select_option("form.filters select[name=kind]", "live")
    page.click("form.filters button")
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    expect(page.locator("table.list tbody")).to_contain_text("LIVE-0003")
    page.goto("/ui/installations")
    expect(page.locator("#count")).to_have_text("78 found, page 1 of 2")
    page.click("a[rel=next]")
    expect(page.locator("table.list tbody tr")).to_have_count(28)


def test_installation_page_shows_fields_links_rules_and_history(context: BrowserContext) -> None:
    page = sign_in(context, OPERATOR)
    page.goto("/ui/installations?q=ACME-0001")
    page.click("text=ACME-0001")
    expect(page.locator("h1")).to_contain_text("ACME-0001")
    expect(page.locator("#fields")).to_contain_text("192.0.2.10")
    pair = page.locator("#links a.pair")
    expect(pair).to_have_attribute("href", "/ui/pair/ACME-0001/BETA-0002/einvoice")
    expect(page.locator("#rules-text")).to_contain_text("BETA-0002")
    expect(page.locator("#rules button.copy")).to_be_visible()  # JavaScript ran (CSP: 'self')
    expect(page.locator("#history .event").last).to_contain_text("add")
    page.screenshot(path=str(SCREENSHOTS / "installation.png"), full_page=True)


def test_an_edit_carries_the_form_token_and_a_forged_post_is_refused(
    context: BrowserContext, server: ServerProcess
) -> None:
    page = sign_in(context, OPERATOR)
    page.goto("/ui/installations/BULK-0005")
    page.fill("#edit input[name=port]", "9033")
    page.click("#edit button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/installations/BULK-0005$"))
    expect(page.locator("#fields")).to_contain_text("9033")
    expect(page.locator("#history .event").first).to_contain_text(f"by {OPERATOR[0]} via ui")
    with server.registry() as registry:
        assert registry.get("BULK-0005").port == 9033
        assert registry.store.history("BULK-0005")[-1]["actor"] == OPERATOR[0]
    # The session's cookie goes with it, the form token does not: refused.
    forged = context.request.post(
        f"{server.http_url}/ui/installations/BULK-0005/edit",
        form={"label": "forged", "kind": "onprem", "ip": "", "ipv6": "", "port": "1"},
    )
    assert forged.status == 403
    assert "the form&#39;s token is missing" in forged.text()  # escaped, as every value
    with server.registry() as registry:
        assert registry.get("BULK-0005").label == "bulk-5"


def test_a_support_account_may_look_but_not_change(
    context: BrowserContext, server: ServerProcess
) -> None:
    page = sign_in(context, SUPPORT)
    page.goto("/ui/installations/BETA-0002")
    expect(page.locator("h1")).to_contain_text("BETA-0002")
    expect(page.locator("#edit")).to_have_count(0)
    expect(page.locator("a:has-text('Add installation')")).to_have_count(0)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    refused = context.request.post(
        f"{server.http_url}/ui/installations/BETA-0002/edit",
        form={"csrf": csrf, "label": "changed", "kind": "onprem", "ip": "", "ipv6": "", "port": ""},
    )
    assert refused.status == 403
    assert "support account" in refused.text()
    with server.registry() as registry:
        assert registry.get("BETA-0002").label == "beta-torino"

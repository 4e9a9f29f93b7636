"""An operator's changes in headless Chromium: signing in with the admin token, a
Live installation's placement, rotating a token (shown once, in the POST's answer:
never in an address, the history or the server's log), removing an installation (its
code typed to confirm; a wrong code refused) and the probe button against a real
listener on loopback (its outcome recorded as flow results, the account named)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from controparte.model import Link
from controparte.store import Origin
from tests.browser.conftest import ADMIN_TOKEN, OPERATOR, sign_in
from tests.processes import remember_secret
from tests.realserver import ServerProcess


def admin(context: BrowserContext) -> Page:
    """A page of `context` signed in with the admin token."""
    page = context.new_page()
    page.goto("/ui/")
    page.click("summary:has-text('admin token')")
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/")
    return page


def test_the_admin_token_signs_in_and_a_live_installation_shows_its_gateway(
    context: BrowserContext,
) -> None:
    page = admin(context)
    expect(page.locator("header .account")).to_have_text("admin")
    assert ADMIN_TOKEN not in page.url
    page.goto("/ui/installations/LIVE-0003")
    expect(page.locator("#placement")).to_have_text(re.compile(r"^gateway gw1, port 900\d$"))
    page.goto("/ui/installations/ACME-0001")
    expect(page.locator("#placement")).to_have_count(0)  # not a Live one


def test_a_rotated_token_is_shown_once_in_the_answer_only(
    context: BrowserContext, server: ServerProcess
) -> None:
    page = sign_in(context, OPERATOR)
    page.goto("/ui/installations/BULK-0010")
    page.click("button:has-text('Rotate token')")
    token = remember_secret(page.locator("#token").inner_text().strip())
    assert len(token) >= 32
    assert token not in page.url
    page.goto("/ui/installations/BULK-0010")
    expect(page.locator("#history .event").first).to_contain_text("token")
    assert token not in page.content()
    beat = httpx.post(
        f"{server.http_url}/v1/installations/BULK-0010/heartbeat",
        json={"port": 4443},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert beat.status_code == 200, beat.text  # the new token works
    with server.registry() as registry:
        assert token not in str(registry.store.history("BULK-0010"))
    assert token not in server.log_text()


def test_remove_needs_the_code_typed(context: BrowserContext, server: ServerProcess) -> None:
    page = sign_in(context, OPERATOR)
    page.goto("/ui/installations/BULK-0011")
    page.fill("input[name=confirm]", "BULK-0012")
    page.click("button.danger:has-text('Remove')")
    expect(page.locator("body")).to_contain_text("type the installation's code to remove it")
    with server.registry() as registry:
        assert registry.get("BULK-0011").label == "bulk-11"
    page.goto("/ui/installations/BULK-0011")
    page.fill("input[name=confirm]", "bulk-0011")
    page.click("button.danger:has-text('Remove')")
    expect(page).to_have_url(re.compile(r"/ui/installations$"))
    with server.registry() as registry:
        assert registry.store.get("BULK-0011") is None


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on loopback (the kernel accepts for it); its port."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


def test_the_probe_button_records_what_it_saw(
    context: BrowserContext, server: ServerProcess, listener: int
) -> None:
    with server.registry() as registry:
        registry.add("PROBE-0090", "probe-lo", ipv4="127.0.0.1", port=listener)
        with registry.transaction(Origin()) as tx:
            tx.add_link(Link.create("ACME-0001", "PROBE-0090", "einvoice"))
    page = sign_in(context, OPERATOR)
    page.goto("/ui/installations/PROBE-0090")
    expect(page.locator("#links a.pair")).to_have_text("0 passed · 0 failed")
    page.click("button:has-text('Probe from the service')")
    expect(page.locator("#probe")).to_contain_text(f"127.0.0.1 port {listener}: open")
    expect(page.locator("#recorded")).to_have_text(re.compile(r"^[1-9]\d* flow results? recorded$"))
    expect(page.locator("#links a.pair")).to_have_text(re.compile(r"^[1-9]\d* passed · 0 failed$"))
    page.click("#links a.pair")
    expect(page).to_have_url(re.compile(r"/ui/pair/ACME-0001/PROBE-0090/einvoice$"))
    passed = page.locator("svg.pair-diagram g[data-outcome='passed'] text.pair-outcome")
    expect(passed.first).to_have_text(
        re.compile(rf"^PASSED · \d+ s ago · dashboard \(account {OPERATOR[0]}\)$")
    )

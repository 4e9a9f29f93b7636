"""The pair view in headless Chromium: a doctor's report sent to the API colours the
diagram of ACME-0001 -> BETA-0002 (einvoice): the failed flow's arrow red and worded
FAILED, its table row too, the other flows as their results say; reached from the
installation's page, readable by a support account, with no Content-Security-Policy
violation. The page is saved as docs/screenshots/pair.png (the README shows it)."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import BrowserContext, ConsoleMessage, expect

from controparte.model.flowresult import Outcome
from controparte.web.diagram import COLOURS
from tests.agentproc import issue_token
from tests.browser.conftest import SCREENSHOTS, SUPPORT, sign_in
from tests.realserver import ServerProcess

OUT = "outbound:ACME-0001->BETA-0002"
BACK = "return:BETA-0002->ACME-0001"


def report(server: ServerProcess) -> None:
    """ACME-0001's doctor reports: the outbound flow refused, the return one passed."""
    token = issue_token(server, "ACME-0001")
    flows = [
        {"id": OUT, "ports": "4443", "status": "failed", "reason": "connecting to"
         " 198.51.100.20:4443: refused (a TCP reset: nothing listens there)"},
        {"id": BACK, "ports": "4443", "status": "passed", "reason": "the relay got through"},
    ]  # fmt: skip
    plan = {"caller": "ACME-0001", "callee": "BETA-0002", "feature": "einvoice", "flows": flows}
    answer = httpx.post(
        f"{server.http_url}/v1/installations/ACME-0001/flow-results",
        json={"plans": [plan]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.json() == {"recorded": 2, "skipped": []}, answer.text


def test_a_failed_flow_is_coloured_and_worded_failed(
    context: BrowserContext, server: ServerProcess
) -> None:
    report(server)
    page = sign_in(context, SUPPORT)  # reading needs no operator
    refused: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    page.on("console", watch)
    page.goto("/ui/installations/ACME-0001")
    page.click("#links a.pair")
    expect(page).to_have_url(re.compile(r"/ui/pair/ACME-0001/BETA-0002/einvoice$"))
    out = page.locator(f"svg.pair-diagram g[data-flow='{OUT}']")
    expect(out).to_have_attribute("data-outcome", "failed")
    expect(out.locator("line")).to_have_attribute("stroke", COLOURS[Outcome.FAILED])
    expect(out.locator("text.pair-outcome")).to_have_text(
        re.compile(r"^FAILED · \d+ s ago · doctor \(ACME-0001\)$")
    )
    back = page.locator(f"svg.pair-diagram g[data-flow='{BACK}']")
    expect(back).to_have_attribute("data-outcome", "passed")
    expect(page.get_by_role("img")).to_have_accessible_name(
        re.compile(r"acme-milano \(ACME-0001\) calls beta-torino \(BETA-0002\)")
    )
    row = page.locator(f"#flows tr[data-flow='{OUT}']")
    expect(row.locator(".badge")).to_have_text("failed")
    expect(row).to_contain_text("refused (a TCP reset")
    expect(page.locator(f"#flows tr[data-flow='{BACK}'] .badge")).to_have_text("passed")
    expect(page.locator("#results tbody tr")).to_have_count(2)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "pair.png"), full_page=True)
    assert refused == []

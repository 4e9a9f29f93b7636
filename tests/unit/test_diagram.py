"""The pair diagram (`web/diagram.py`), read back with xml.etree: one arrow per flow from
the right lane to the right lane, coloured and worded by its last result, Live gateways
and start-live hosts where the plan has them, every user-given value escaped, nothing
that runs, and titles for the reader who does not see colours."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import timedelta

import pytest

from controparte.model.flowresult import FlowResult, Outcome, ResultSource
from controparte.model.installation import utcnow
from controparte.plan.catalog import packaged_catalog
from controparte.plan.planner import Party, Plan, plan
from controparte.web.diagram import COLOURS, pair_svg

NS = {"s": "http://www.w3.org/2000/svg"}
NOW = utcnow()
CATALOG = packaged_catalog()
SHOP = Party("A1", "shop-a", False, ("203.0.113.2",), 8443, 8000)
STUDIO = Party("B1", "studio-b", False, ("203.0.113.6",), 4443, None)
LIVE = Party("L1", "live-l", True, ("198.51.100.34",), 9100, None)


def seen(the_plan: Plan, flow: str, outcome: Outcome, minutes: int = 5) -> FlowResult:
    found = next(f for f in the_plan.flows if f.id == flow)
    return FlowResult.create(
        caller=the_plan.caller.code,
        callee=the_plan.callee.code,
        feature=the_plan.feature.id,
        flow=flow,
        ports=found.ports_text,
        outcome=outcome,
        at=NOW - timedelta(minutes=minutes),
        source=ResultSource.DOCTOR,
        reporter=the_plan.caller.code,
        detail="connecting: refused <b>&</b>",
    )


def draw(the_plan: Plan, *results: FlowResult) -> ET.Element:
    text = pair_svg(the_plan, {r.flow: r for r in results}, NOW, CATALOG.live)
    return ET.fromstring(text)


def flows(svg: ET.Element) -> dict[str, ET.Element]:
    return {g.attrib["data-flow"]: g for g in svg.iterfind(".//s:g[@data-flow]", NS)}


def lane_x(svg: ET.Element, key: str) -> float:
    line = svg.find(f".//s:g[@class='pair-lane lane-{key}']/s:line", NS)
    assert line is not None
    return float(line.attrib["x1"])


def arrow(group: ET.Element) -> ET.Element:
    line = group.find("s:line", NS)
    assert line is not None
    return line


def texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iterfind(".//s:text", NS)]


def test_each_flow_is_an_arrow_from_who_dials_coloured_by_its_result() -> None:
    the_plan = plan(SHOP, STUDIO, CATALOG.feature("einvoice"), CATALOG)
    svg = draw(the_plan, seen(the_plan, "outbound:A1->B1", Outcome.FAILED, 12))
    found = flows(svg)
    assert list(found) == ["outbound:A1->B1", "return:B1->A1"]
    out, back = found.values()
    caller, callee = lane_x(svg, "caller"), lane_x(svg, "callee")
    line = arrow(out)
    assert float(line.attrib["x1"]) - caller == pytest.approx(4)  # from the caller's lane
    assert float(line.attrib["x2"]) - callee == pytest.approx(-4)  # to the callee's
    assert float(arrow(back).attrib["x1"]) > float(arrow(back).attrib["x2"])  # and back
    assert (out.attrib["data-outcome"], back.attrib["data-outcome"]) == ("failed", "unknown")
    assert line.attrib["stroke"] == COLOURS[Outcome.FAILED]
    assert "stroke-dasharray" not in line.attrib
    assert line.attrib["marker-end"] == "url(#pair-arrow-failed)"
    assert arrow(back).attrib["stroke-dasharray"]  # unknown is dashed, not grey alone
    assert texts(out)[:2] == [
        "outbound · server · port 4443",
        "FAILED · 12 min ago · doctor (A1)",
    ]
    assert (
        texts(out)[2]
        == "rules: caller egress 4443 · callee port-forward 4443->4443 · callee inbound 4443"
    )
    assert texts(back)[1] == "NO RESULT: never tested on these ports"
    title = out.find("s:title", NS)
    assert title is not None and title.text is not None
    assert title.text.endswith("connecting: refused <b>&</b>")


def test_live_gateways_and_start_live_hosts_have_lanes_of_their_own() -> None:
    the_plan = plan(SHOP, LIVE, CATALOG.feature("einvoice"), CATALOG)
    svg = draw(the_plan, seen(the_plan, "outbound:A1->L1", Outcome.PASSED, 90))
    start_live, caller = lane_x(svg, "start-live"), lane_x(svg, "caller")
    assert start_live < caller  # beside the party that dials the hosts
    callee = svg.find(".//s:g[@class='pair-lane lane-callee']", NS)
    assert callee is not None
    assert "Live gateway · ports 9000-9999" in texts(callee)
    found = flows(svg)
    # the flow names the Live port really dialled; the egress rule keeps the range
    assert texts(found["outbound:A1->L1"])[:3] == [
        "outbound · server · port 9100",
        "PASSED · 2 h ago · doctor (A1)",
        "rules: caller egress 9000-9999",
    ]
    host = found["start-live:A1->start-live01.controparte.test"]
    assert float(arrow(host).attrib["x2"]) == pytest.approx(start_live + 4)
    assert texts(host)[0] == (
        "outbound · server to start-live01.controparte.test (any of) · port 443"
    )
    # the Live server may dial only the Live range, and A1's port is outside it
    back = found["return:L1->A1"]
    assert texts(back)[2].startswith("blocked: live-l (L1) is Live: Live servers may open")
    assert texts(back)[2].endswith("…")  # cut under the arrow, whole in its title
    title = back.find("s:title", NS)
    assert title is not None and title.text is not None
    assert "public port is 8443." in title.text
    assert arrow(back).attrib["stroke-dasharray"] == "8 5"


def test_a_blocked_flow_says_why_and_is_dashed() -> None:
    nowhere = Party("B2", "studio-c", False, (), None, None)
    the_plan = plan(SHOP, nowhere, CATALOG.feature("einvoice"), CATALOG)
    out = flows(draw(the_plan))["outbound:A1->B2"]
    assert arrow(out).attrib["stroke-dasharray"] == "8 5"
    assert texts(out)[2] == "blocked: studio-c (B2) has no public port registered"


def test_every_value_is_escaped_and_nothing_runs() -> None:
    evil = Party("X1", '<script>alert("x")</script>&', False, ("203.0.113.9",), 4443, None)
    the_plan = plan(SHOP, evil, CATALOG.feature("einvoice"), CATALOG)
    result = seen(the_plan, "outbound:A1->X1", Outcome.PASSED)
    text = pair_svg(
        the_plan,
        {result.flow: replace(result, detail="a\x00b </title><script>")},
        NOW,
        CATALOG.live,
    )
    assert "<script" not in text
    assert "&lt;script&gt;" in text
    svg = ET.fromstring(text)  # well-formed, NUL and all
    assert not list(svg.iter("{http://www.w3.org/2000/svg}script"))
    assert all(not k.startswith("on") and k != "style" for e in svg.iter() for k in e.attrib)
    titles = [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert any('callee: <script>alert("x")</script>&' in t for t in titles)
    assert any(t.endswith("a?b </title><script>") for t in titles)


def test_the_document_is_titled_and_described_for_the_reader() -> None:
    the_plan = plan(SHOP, STUDIO, CATALOG.feature("realtime"), CATALOG)
    svg = draw(the_plan, seen(the_plan, "return:A1->B1", Outcome.UNTESTED))
    assert svg.attrib["role"] == "img"
    assert svg.attrib["aria-labelledby"] == "pair-title pair-desc"
    title, desc = svg.find("s:title", NS), svg.find("s:desc", NS)
    assert title is not None and desc is not None
    assert title.text == (
        f"{CATALOG.feature('realtime').name} (realtime): shop-a (A1) calls studio-b (B1)"
    )
    assert desc.text is not None and desc.text.startswith("4 flow(s): 1 untested, 3 unknown.")
    legend = svg.find(".//s:g[@class='pair-legend']", NS)
    assert legend is not None
    assert texts(legend) == ["passed", "failed", "untested", "no result"]


@pytest.mark.parametrize(
    ("gateway", "header"),
    [("gw1", "Live gateway gw1 port 9100"), (None, "Live gateway · ports 9000-9999")],
)
def test_a_live_lane_names_the_gateway_and_port_the_pool_placed_it_on(
    gateway: str | None, header: str
) -> None:
    live = replace(LIVE, gateway=gateway)
    svg = draw(plan(SHOP, live, CATALOG.feature("einvoice"), CATALOG))
    callee = svg.find(".//s:g[@class='pair-lane lane-callee']", NS)
    assert callee is not None
    lane = texts(callee)
    assert header in lane
    assert [t for t in lane if t.startswith("Live gateway")] == [header]

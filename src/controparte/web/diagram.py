"""The pair diagram: a plan's flows between two installations, each coloured by what was
last seen of it, as one SVG document. Pure: a `Plan`, the results it is shown with and
the time in; a string out.

What it draws, as a sequence diagram: a lane per party (the caller, the callee and,
when the plan has start-live flows, the start-live hosts, beside the party that dials
them); a Live party's lane starts with its Live gateway: its name and the port allocated
there when the Live pool placed it, else the port range. Each flow is
one arrow, in plan order, from its source's lane to its destination's, labelled with
its direction, who opens it (the server or every client), its port(s) and the rules it
needs (each side's egress, port forward and inbound); below it, its outcome in words,
the age of its result and where the result came from. A flow the plan blocks is drawn
dashed and says why.

Colour never speaks alone: every outcome is written out, and untested and unknown
flows are dashed as well as grey or amber. The document has a `title` and a `desc`
(`role="img"`), each flow a `title` of its own. It is built with ElementTree, which
escapes every value (labels, codes, host names and results' details come from users);
characters XML cannot carry are replaced. No script, no style attribute: presentation
attributes and classes only (`pair-flow`, `outcome-<outcome>`), so a strict
Content-Security-Policy holds.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from controparte.model.flowresult import FlowResult, Outcome, duration_text
from controparte.plan.catalog import LiveSettings
from controparte.plan.planner import Flow, Initiator, Party, Plan, Role, Rule

SVG_NS = "http://www.w3.org/2000/svg"
COLOURS = {
    Outcome.PASSED: "#1b7f3a",
    Outcome.FAILED: "#c62828",
    Outcome.UNTESTED: "#a15c00",
    Outcome.UNKNOWN: "#6b6b6b",
}
"""Each outcome's colour (each readable on white, WCAG AA for text)."""
DASHED = {Outcome.UNTESTED: "6 4", Outcome.UNKNOWN: "2 4"}
"""Outcomes drawn dashed besides their colour."""
WORDS = {
    Outcome.PASSED: "PASSED",
    Outcome.FAILED: "FAILED",
    Outcome.UNTESTED: "UNTESTED",
    Outcome.UNKNOWN: "NO RESULT",
}

LANE_GAP = 300
MARGIN = 150
HEAD = 112
ROW = 92
FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
START_LIVE = "start-live"


MAX_LINE = 84
"""Characters of a line under an arrow; the flow's title holds the whole text."""


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def _text(value: object) -> str:
    """`value` as text XML can carry (ElementTree escapes the rest)."""
    return _NOT_XML.sub("?", str(value))


@dataclass(frozen=True, slots=True)
class Lane:
    """One column of the diagram: its key (`caller`, `callee` or `start-live`), where it
    stands and the lines of its header."""

    key: str
    x: int
    lines: tuple[str, ...]
    live: bool = False
    gateway: str | None = None
    """A Live lane's gateway, as `Party.placement` words it (None: not placed)."""


def _party_lines(role: Role, party: Party) -> tuple[str, ...]:
    where = ", ".join(party.addresses) or "no address registered"
    port = "no public port" if party.port is None else f"public port {party.port}"
    if party.private_port is not None and party.private_port != party.port:
        port += f" -> {party.private_port}"
    kind = "Live" if party.live else "on-premises"
    return (f"{role.value}: {party.label}", f"{party.code} · {kind}", where, port)


def _lanes(plan: Plan, live: LiveSettings) -> tuple[Lane, ...]:
    """The lanes, left to right: the start-live hosts beside the party that dials them."""
    hosts = tuple(dict.fromkeys(f.host for f in plan.flows if f.host is not None))
    dialler = next((f.source for f in plan.flows if f.host is not None), None)
    keys: list[str] = [Role.CALLER.value, Role.CALLEE.value]
    if dialler is Role.CALLER:
        keys.insert(0, START_LIVE)
    elif dialler is Role.CALLEE:
        keys.append(START_LIVE)
    lanes = []
    for i, key in enumerate(keys):
        x = MARGIN + i * LANE_GAP
        if key == START_LIVE:
            lines = ("start-live hosts", *hosts, f"port {live.start_live_port}")
            lanes.append(Lane(key, x, lines))
        else:
            party = plan.party(Role(key))
            gateway = party.placement if party.gateway is not None else None
            lanes.append(Lane(key, x, _party_lines(Role(key), party), party.live, gateway))
    return tuple(lanes)


def _rule_text(rule: Rule) -> str:
    ports = rule.ports_text + (f"->{rule.to_port}" if rule.to_port is not None else "")
    return f"{rule.side.value} {rule.action.value} {ports}"


def _outcome_line(result: FlowResult | None, now: datetime) -> str:
    if result is None:
        return "NO RESULT: never tested on these ports"
    age = duration_text((now - result.at).total_seconds())
    return f"{WORDS[result.outcome]} · {age} ago · {result.by}"


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    if tag == "text":  # a white halo keeps text readable across lanes and arrows
        attrs = {"stroke": "#ffffff", "stroke_width": 3, "paint_order": "stroke", **attrs}
    element = ET.SubElement(parent, tag, {k.replace("_", "-"): _text(v) for k, v in attrs.items()})
    if text is not None:
        element.text = _text(text)
    return element


def _markers(svg: ET.Element, prefix: str) -> None:
    defs = _add(svg, "defs")
    for outcome, colour in COLOURS.items():
        marker = _add(
            defs,
            "marker",
            id=f"{prefix}-arrow-{outcome.value}",
            viewBox="0 0 10 10",
            refX=9,
            refY=5,
            markerWidth=11,
            markerHeight=11,
            markerUnits="userSpaceOnUse",
            orient="auto-start-reverse",
        )
        _add(marker, "path", d="M 0 0 L 10 5 L 0 10 z", fill=colour)


def _lane(svg: ET.Element, lane: Lane, bottom: int, live: LiveSettings) -> None:
    group = _add(svg, "g", **{"class": f"pair-lane lane-{lane.key}"})
    _add(group, "title", " — ".join(lane.lines))
    _add(
        group,
        "rect",
        x=lane.x - 130,
        y=10,
        width=260,
        height=HEAD - 24,
        rx=6,
        fill="#f4f6f8",
        stroke="#33414e",
    )
    for i, line in enumerate(lane.lines[:5]):
        _add(
            group,
            "text",
            line,
            x=lane.x,
            y=30 + i * 16,
            text_anchor="middle",
            font_weight="bold" if i == 0 else "normal",
        )
    top = HEAD - 14
    if lane.live:
        _add(
            group,
            "rect",
            x=lane.x - 110,
            y=top,
            width=220,
            height=22,
            rx=4,
            fill="#e8eefc",
            stroke="#2f4f9e",
        )
        _add(
            group,
            "text",
            f"Live {lane.gateway}"
            if lane.gateway is not None
            else f"Live gateway · ports {live.range_text}",
            x=lane.x,
            y=top + 15,
            text_anchor="middle",
        )
        top += 22
    _add(group, "line", x1=lane.x, y1=top, x2=lane.x, y2=bottom, stroke="#9aa5b1")


def _flow(
    svg: ET.Element,
    flow: Flow,
    result: FlowResult | None,
    *,
    y: int,
    xs: Mapping[str, int],
    now: datetime,
    prefix: str,
) -> None:
    """The arrow of `flow` at height `y` between the lanes at `xs`, its labels and
    its result."""
    outcome = Outcome.UNKNOWN if result is None else result.outcome
    colour = COLOURS[outcome]
    start = xs[flow.source.value]
    end = xs[START_LIVE if flow.host is not None else flow.destination.value]
    step = 4 if end > start else -4
    who = "every client" if flow.origin is Initiator.CLIENTS else "server"
    group = _add(
        svg,
        "g",
        **{
            "class": f"pair-flow outcome-{outcome.value}",
            "data-flow": flow.id,
            "data-outcome": outcome.value,
        },
    )
    said = _outcome_line(result, now)
    detail = "" if result is None else f": {result.detail}"
    blocked = f" Blocked: {flow.blocked}." if flow.blocked else ""
    _add(group, "title", f"{flow.description}.{blocked} {said}{detail}")
    dashes = "8 5" if flow.blocked else DASHED.get(outcome)
    _add(
        group,
        "line",
        x1=start + step,
        y1=y,
        x2=end - step,
        y2=y,
        stroke=colour,
        stroke_width=3,
        marker_end=f"url(#{prefix}-arrow-{outcome.value})",
        **({} if dashes is None else {"stroke_dasharray": dashes}),
    )
    middle = (start + end) // 2
    to = f" to {flow.host}" if flow.host is not None else ""
    to += " (any of)" if flow.any_of is not None else ""
    _add(
        group,
        "text",
        f"{flow.direction.value} · {who}{to} · port {flow.ports_text}",
        x=middle,
        y=y - 8,
        text_anchor="middle",
    )
    _add(
        group,
        "text",
        said,
        x=middle,
        y=y + 18,
        text_anchor="middle",
        fill=colour,
        font_weight="bold",
        **{"class": "pair-outcome"},
    )
    rules = " · ".join(_rule_text(r) for r in flow.rules) or "no rule: the cloud carries it"
    note = f"blocked: {flow.blocked}" if flow.blocked else f"rules: {rules}"
    _add(group, "text", _cut(note), x=middle, y=y + 34, text_anchor="middle", fill="#33414e")


def _legend(svg: ET.Element, y: int) -> None:
    group = _add(svg, "g", **{"class": "pair-legend"})
    _add(group, "title", "legend: each flow's last result")
    for i, (outcome, colour) in enumerate(COLOURS.items()):
        x = 20 + i * 150
        _add(
            group,
            "line",
            x1=x,
            y1=y,
            x2=x + 30,
            y2=y,
            stroke=colour,
            stroke_width=3,
            **({} if outcome not in DASHED else {"stroke_dasharray": DASHED[outcome]}),
        )
        _add(group, "text", WORDS[outcome].lower(), x=x + 38, y=y + 4)


def pair_svg(
    plan: Plan,
    shown: Mapping[str, FlowResult],
    now: datetime,
    live: LiveSettings,
    *,
    prefix: str = "pair",
) -> str:
    """The SVG of `plan`'s flows, each with the result `shown` for its id (none:
    unknown), ages counted to `now`; `live` gives the Live gateways' range and the
    start-live port; `prefix` keeps the document's ids apart from the page's."""
    lanes = _lanes(plan, live)
    xs = {lane.key: lane.x for lane in lanes}
    first = HEAD + 40 + (22 if any(lane.live for lane in lanes) else 0)
    bottom = first + ROW * len(plan.flows)
    width = 2 * MARGIN + LANE_GAP * (len(lanes) - 1)
    height = bottom + 50
    feature = plan.feature
    counts = {o: 0 for o in Outcome}
    for flow in plan.flows:
        result = shown.get(flow.id)
        counts[Outcome.UNKNOWN if result is None else result.outcome] += 1
    tally = ", ".join(f"{n} {o.value}" for o, n in counts.items() if n)
    svg = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "viewBox": f"0 0 {width} {height}",
            "width": str(width),
            "height": str(height),
            "role": "img",
            "aria-labelledby": f"{prefix}-title {prefix}-desc",
            "font-family": FONT,
            "font-size": "12",
            "class": "pair-diagram",
        },
    )
    _add(
        svg,
        "title",
        f"{feature.name} ({feature.id}): {plan.caller.name} calls {plan.callee.name}",
        id=f"{prefix}-title",
    )
    _add(
        svg,
        "desc",
        f"{len(plan.flows)} flow(s): {tally or 'none'}. Each arrow goes from who dials to"
        " who is dialled, labelled with its port, its direction, its rules and its last"
        " result.",
        id=f"{prefix}-desc",
    )
    _markers(svg, prefix)
    for lane in lanes:
        _lane(svg, lane, bottom, live)
    for i, flow in enumerate(plan.flows):
        _flow(svg, flow, shown.get(flow.id), y=first + i * ROW, xs=xs, now=now, prefix=prefix)
    _legend(svg, height - 20)
    return ET.tostring(svg, encoding="unicode")

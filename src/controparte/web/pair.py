"""The pair view, `GET /ui/pair/{caller}/{callee}/{feature}` (signed in): the plan of a
feature between two installations as a diagram (`diagram.py`), each flow coloured by
what was last seen of it (`service/results.py`: the service's probes, relayed dials,
doctors' reports), a table of the flows with their last result, its age and where it
came from, the plan's notes and the results kept, newest first. It reads only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controparte.model.flowresult import FlowResult, Outcome, duration_text
from controparte.model.installation import utcnow
from controparte.plan.planner import Flow, Plan
from controparte.web.diagram import pair_svg
from controparte.web.pages import render, web_of
from controparte.web.session import signed_in

HISTORY_SHOWN = 50
"""Results listed under the diagram, at most."""


@dataclass(frozen=True, slots=True)
class FlowRow:
    """One row of the flows' table."""

    flow: Flow
    source: str
    destination: str
    outcome: Outcome
    result: FlowResult | None
    age: str | None


def rows(plan: Plan, shown: Mapping[str, FlowResult], now: datetime) -> list[FlowRow]:
    """The table's rows, in plan order (pure): who dials whom, the outcome shown and
    its age at `now`."""
    found = []
    for flow in plan.flows:
        result = shown.get(flow.id)
        destination = flow.host or plan.party(flow.destination).name
        found.append(
            FlowRow(
                flow,
                plan.party(flow.source).name,
                destination,
                Outcome.UNKNOWN if result is None else result.outcome,
                result,
                None
                if result is None
                else f"{duration_text((now - result.at).total_seconds())} ago",
            )
        )
    return found


def page(request: Request) -> Response:
    session = signed_in(request)
    services = web_of(request).services
    params = request.path_params
    pair = services.results.for_pair(params["caller"], params["callee"], params["feature"])
    now = utcnow()
    svg = pair_svg(pair.plan, pair.shown, now, services.catalog.live)
    return render(
        request,
        "pair.html",
        session,
        plan=pair.plan,
        diagram=Markup(svg),  # noqa: S704 (ElementTree escaped every value: diagram.py)
        rows=rows(pair.plan, pair.shown, now),
        history=pair.history[:HISTORY_SHOWN],
    )


routes = [Route("/pair/{caller}/{callee}/{feature}", page, methods=["GET"])]

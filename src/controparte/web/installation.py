"""One installation: its fields (a Live one's placement: its gateway), its history as
a timeline (address changes marked), its links (each counterpart and feature with how
many of the plan's flows last passed and failed, linking to the pair view,
`/ui/pair/{caller}/{callee}/{feature}`), the firewall rules its side needs (with a
copy button), and the forms: probe (anyone signed in: it changes no installation; its
outcome is recorded as flow results, the account named), edit, rotate the token
(shown once, on the answer) and remove (an operator's).

Every change goes through the service layer (`Registry.update`, `Registry.remove`,
`Access.issue_token`) with the account named in the audit history (via `ui`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from controparte.errors import ValidationError
from controparte.model import Installation, Link
from controparte.model.flowresult import Outcome
from controparte.model.installation import InstallationChange, Kind
from controparte.plan.firewall import FORMATS
from controparte.service.accounts import Session
from controparte.service.probe import ProbeReport, counterpart_targets, run_dial
from controparte.service.results import FlowResults
from controparte.service.status import fqdn, is_stale
from controparte.store import Origin
from controparte.web.pages import render, web_of
from controparte.web.session import checked_form, signed_in

SHOWN_FIELDS = ("label", "kind", "ip", "ipv6", "port")
"""The fields of a history entry the timeline compares (what the history records)."""
ADDRESS_FIELDS = frozenset({"ip", "ipv6", "port"})


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the timeline: when, what, who and how, and the fields it changed
    as (field, before, after)."""

    at: str
    action: str
    actor: str
    via: str
    source: str | None
    changes: tuple[tuple[str, object, object], ...]
    link: Mapping[str, Any] | None

    @property
    def moved(self) -> bool:
        """Whether the address or the port changed."""
        return any(name in ADDRESS_FIELDS for name, _, _ in self.changes)


def timeline(entries: Sequence[Mapping[str, Any]]) -> list[Event]:
    """The history's entries, newest first, with what each changed (pure)."""
    events = []
    for entry in entries:
        old, new = entry.get("old"), entry.get("new")
        link = None
        changes: list[tuple[str, object, object]] = []
        if entry["action"] in {"link", "unlink"}:
            link = new if isinstance(new, Mapping) else old
        else:
            before = old if isinstance(old, Mapping) else {}
            after = new if isinstance(new, Mapping) else {}
            changes = [
                (name, before.get(name), after.get(name))
                for name in SHOWN_FIELDS
                if before.get(name) != after.get(name)
            ]
        events.append(
            Event(
                at=str(entry["at"]),
                action=str(entry["action"]),
                actor=str(entry["actor"]),
                via=str(entry["via"]),
                source=None if entry.get("source") is None else str(entry["source"]),
                changes=tuple(changes),
                link=link if isinstance(link, Mapping) else None,
            )
        )
    return events[::-1]


@dataclass(frozen=True, slots=True)
class Counterpart:
    """A link as one installation sees it: the other end, the feature, who calls, and
    the pair view's path (caller first)."""

    code: str
    feature: str
    calls: bool
    """Whether this installation is the caller."""
    pair: str
    passed: int = 0
    failed: int = 0
    """How many of the plan's flows last passed, failed (`PairResults.outcome`)."""


def counterparts_of(
    code: str,
    links: Sequence[Link],
    root: str,
    outcomes: Callable[[Link], Sequence[Outcome]] = lambda _: (),
) -> list[Counterpart]:
    """The links of `code`, by counterpart and feature, with the count of their
    flows' `outcomes` that passed and failed (pure when `outcomes` is)."""
    found = []
    for link in links:
        calls = link.a.lower() == code.lower()
        other = link.b if calls else link.a
        seen = outcomes(link)
        found.append(
            Counterpart(
                other,
                link.feature,
                calls,
                f"{root}/pair/{link.a}/{link.b}/{link.feature}",
                seen.count(Outcome.PASSED),
                seen.count(Outcome.FAILED),
            )
        )
    return sorted(found, key=lambda c: (c.code.lower(), c.feature))


def flow_outcomes(results: FlowResults, link: Link) -> list[Outcome]:
    """What each flow of `link`'s plan was last seen as (none when its feature has left
    the catalog)."""
    try:
        pair = results.for_pair(link.a, link.b, link.feature)
    except ValidationError:
        return []
    return [pair.outcome(flow) for flow in pair.plan.flows]


def _page(
    request: Request,
    session: Session,
    code: str,
    status: int = 200,
    **extra: Any,
) -> Response:
    """The installation page (with `extra` for the template: a probe's reports)."""
    web = web_of(request)
    services = web.services
    settings = services.settings
    inst = services.registry.get(code)
    fmt = request.query_params.get("rules", FORMATS[0])
    if fmt not in FORMATS:
        fmt = FORMATS[0]
    report = services.plans.firewall(inst.code)
    root = request.scope.get("root_path", "")
    return render(
        request,
        "installation.html",
        session,
        status,
        inst=inst,
        fqdn=fqdn(inst, settings.zone),
        stale=is_stale(inst, settings.stale_after),
        events=timeline(services.store.history(inst.code)),
        placement=services.registry.pool.where(inst) if inst.kind is Kind.LIVE else None,
        counterparts=counterparts_of(
            inst.code,
            services.store.links(inst.code),
            root,
            lambda link: flow_outcomes(services.results, link),
        ),
        rules=report.script(fmt),
        notes=report.notes,
        fmt=fmt,
        formats=FORMATS,
        kinds=list(Kind),
        reports=extra.get("reports"),
        recorded=extra.get("recorded"),
    )


def page(request: Request) -> Response:
    session = signed_in(request)
    return _page(request, session, request.path_params["code"])


def _origin(request: Request, session: Session) -> Origin:
    return Origin(actor=session.account, via="ui", source=web_of(request).client(request))


def _edit(request: Request, session: Session, code: str, form: Mapping[str, str]) -> Installation:
    change = InstallationChange(
        label=form.get("label", "").strip() or None,
        kind=form.get("kind") or None,
        ipv4=form.get("ip", "").strip(),
        ipv6=form.get("ipv6", "").strip(),
        port=form.get("port", "").strip(),
    )
    return web_of(request).services.registry.update(code, change, _origin(request, session))


async def edit(request: Request) -> Response:
    session, form = await checked_form(request)
    inst = await run_in_threadpool(_edit, request, session, request.path_params["code"], form)
    root = request.scope.get("root_path", "")
    return RedirectResponse(f"{root}/installations/{inst.code}", 303)


async def remove(request: Request) -> Response:
    session, form = await checked_form(request)
    code = request.path_params["code"]
    if form.get("confirm", "").strip().lower() != code.lower():
        raise ValidationError("confirm", "type the installation's code to remove it")
    registry = web_of(request).services.registry
    await run_in_threadpool(registry.remove, code, _origin(request, session))
    root = request.scope.get("root_path", "")
    return RedirectResponse(f"{root}/installations", 303)


def _rotate(request: Request, session: Session, code: str) -> tuple[Installation, str]:
    services = web_of(request).services
    inst = services.registry.get(code)
    return inst, services.access.issue_token(inst.code, _origin(request, session))


async def rotate(request: Request) -> Response:
    session, _ = await checked_form(request)
    inst, token = await run_in_threadpool(_rotate, request, session, request.path_params["code"])
    return render(request, "token.html", session, inst=inst, token=token, created=False)


async def probe(request: Request) -> Response:
    """Dial the installation's registered addresses at its public port from the
    service (connect only, as the counterpart probe: the service holds no token to
    send the probe line with); one probe of an installation per few seconds. The
    outcome is recorded for the flows towards that port in the plans of all its links
    (`FlowResults.record_probe`, source `dashboard`, the account named)."""
    session, _ = await checked_form(request, change=False)
    services = web_of(request).services
    code = request.path_params["code"]
    inst = await run_in_threadpool(services.registry.get, code)
    targets = counterpart_targets(inst)
    services.probes.acquire(inst.code)
    sources = services.settings.probe_sources
    reports: list[ProbeReport] = list(
        await asyncio.gather(*(run_dial(t, sources=sources) for t in targets))
    )
    recorded = await run_in_threadpool(
        services.results.record_probe, inst, reports, inst, account=session.account
    )
    return await run_in_threadpool(
        _page, request, session, inst.code, 200, reports=reports, recorded=recorded
    )


routes = [
    Route("/installations/{code}", page, methods=["GET"]),
    Route("/installations/{code}/edit", edit, methods=["POST"]),
    Route("/installations/{code}/remove", remove, methods=["POST"]),
    Route("/installations/{code}/token", rotate, methods=["POST"]),
    Route("/installations/{code}/probe", probe, methods=["POST"]),
]

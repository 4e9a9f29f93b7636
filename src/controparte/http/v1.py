"""The versioned JSON API, `/v1`.

| method and path                          | who                          |
| ---------------------------------------- | ---------------------------- |
| POST   /v1/installations                 | admin (returns `token` once) |
| GET    /v1/installations                 | admin                        |
| GET    /v1/installations/{code}          | admin or the installation    |
| PATCH  /v1/installations/{code}          | admin                        |
| DELETE /v1/installations/{code}          | admin                        |
| POST   /v1/installations/{code}/token    | admin or the installation    |
| POST   /v1/installations/{code}/heartbeat| the installation             |
| GET    /v1/installations/{code}/history  | admin or the installation    |
| POST   /v1/installations/{code}/probe    | the installation, from its registered address |
| GET    /v1/installations/{code}/counterparts | admin or the installation |
| POST   /v1/installations/{code}/probe-counterpart | the installation (a linked counterpart) |
| POST   /v1/installations/{code}/relay    | the installation (a linked agent dials it) |
| GET    /v1/installations/{code}/relay/{id}[?wait=S] | the installation that asked |
| GET    /v1/installations/{code}/relay-requests[?wait=S] | the installation (its agent) |
| POST   /v1/installations/{code}/relay-requests/{id} | the installation (its agent) |
| POST   /v1/installations/{code}/flow-results | the installation (its doctor's results) |
| GET    /v1/resolve/{name}                | anyone (what DNS publishes)  |
| GET    /v1/links[?code=CODE]             | admin; with `code`: admin or that installation |
| POST   /v1/links                         | admin                        |
| DELETE /v1/links/{a}/{b}[?feature=F]     | admin                        |
| GET    /v1/plan?caller=&callee=&feature= | admin, or the caller or the callee when linked |
| GET    /v1/flow-results?caller=&callee=&feature= | as /v1/plan                 |

Credentials are `Authorization: Bearer <token>` (see `auth.py` for the rules). Changes
are made through the registry as `Origin(actor, via="api", source=<client address>)`;
heartbeats through the heartbeat writer. Routes that touch the store are plain `def`
(run in the thread pool), so the event loop that also serves DNS over TCP never blocks.
The heartbeat is the exception: `http/heartbeat.py` does its few indexed reads on the
loop (read-only connections: they never wait for a write) and awaits the writer; the
service answers it with a pure-ASGI shell ahead of the router, and this route, which
runs the same function, is what the OpenAPI document describes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from controparte.errors import ForbiddenError, NotFoundError
from controparte.http import heartbeat as heartbeat_core
from controparte.http.auth import Principal
from controparte.http.clientaddr import Client
from controparte.http.context import Context
from controparte.http.replies import JSON
from controparte.http.schemas import (
    CounterpartsOut,
    DoctorReportIn,
    DoctorReportOut,
    ErrorOut,
    FlowResultOut,
    FlowResultsOut,
    FlowStateOut,
    HeartbeatOut,
    HistoryEntry,
    HistoryOut,
    InstallationCreate,
    InstallationCreated,
    InstallationList,
    InstallationOut,
    InstallationPatch,
    LinkAdded,
    LinkCreate,
    LinkList,
    LinkOut,
    LinksAdded,
    PlanOut,
    ProbeCounterpartIn,
    ProbeCounterpartOut,
    ProbeOut,
    RelayCreate,
    RelayCreated,
    RelayDone,
    RelayOut,
    RelayTask,
    RelayTasks,
    ResolveOut,
    TokenOut,
)
from controparte.model import Installation, Link
from controparte.model.flowresult import FlowResult
from controparte.model.probe import Reach
from controparte.plan.firewall import render_rules
from controparte.plan.planner import Role as PlanRole
from controparte.plan.wire import plan_dict
from controparte.service import counterparts as counterpart_facts
from controparte.service.counterparts import Counterpart, linked_counterpart
from controparte.service.probe import choose_target, counterpart_targets, run_dial, run_probe
from controparte.service.relay import relay_report
from controparte.service.results import ReportedFlow, ReportedPlan
from controparte.service.status import public_view
from controparte.store import Origin

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (400, "The body cannot be read: not JSON, or not text"),
        (401, "Missing or wrong credentials"),
        (403, "The credential does not allow this"),
        (404, "No such installation"),
        (409, "Conflicts with another installation"),
        (
            422,
            "The request does not have the documented shape, or a value breaks a rule"
            " (the detail names each field, e.g. body.port)",
        ),
        (429, "Too many failed authentications from this address"),
    )
}


def context(request: Request) -> Context:
    """The app's shared context (set by `create_app`)."""
    ctx = request.app.state.controparte
    assert isinstance(ctx, Context)
    return ctx


_bearer = HTTPBearer(auto_error=False, description="An installation token or an admin token")


def token_of(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return None if credentials is None else credentials.credentials


Ctx = Annotated[Context, Depends(context)]
Token = Annotated[str | None, Depends(token_of)]


def client_of(request: Request, ctx: Ctx) -> Client:
    return ctx.client(request)


ClientDep = Annotated[Client, Depends(client_of)]


def admin(ctx: Ctx, token: Token, client: ClientDep) -> Principal:
    return ctx.gate.admin(token, client)


def admin_for(code: str, ctx: Ctx, token: Token, client: ClientDep) -> Principal:
    return ctx.gate.admin(token, client, code=code)


def admin_or_itself(code: str, ctx: Ctx, token: Token, client: ClientDep) -> Principal:
    return ctx.gate.admin_or_installation(token, client, code)


def itself(code: str, ctx: Ctx, token: Token, client: ClientDep) -> Installation:
    return ctx.gate.installation(token, client, code)


Admin = Annotated[Principal, Depends(admin)]
AdminFor = Annotated[Principal, Depends(admin_for)]
AdminOrItself = Annotated[Principal, Depends(admin_or_itself)]
Itself = Annotated[Installation, Depends(itself)]


def _origin(principal: Principal, client: Client) -> Origin:
    return Origin(actor=principal.actor, via="api", source=client.key)


def _routes(tag: str) -> APIRouter:
    """The routes of one group of the OpenAPI document: under /v1, tagged `tag`, with
    the error answers every route may give. Each route holds its full path (the
    request metrics count it under that)."""
    return APIRouter(prefix="/v1", tags=[tag], responses=_ERRORS)


installation_routes = _routes("installations")
heartbeat_routes = _routes("heartbeat")
resolve_routes = _routes("resolve")
link_routes = _routes("links")
plan_routes = _routes("plans")

# -- management ---------------------------------------------------------------------------


@installation_routes.post(
    "/installations",
    status_code=201,
    summary="Register an installation (admin); its token is in the answer, once",
    description="A Live installation is placed on a Live gateway: given no port, it gets a"
    " free (gateway, port) of the pool (`gateway` picks the gateway); given a port, that"
    " port is checked free. The answer tells the placement (`gateway`, `ip`, `ipv6`,"
    " `port`).",
    responses={
        503: {
            "model": ErrorOut,
            "description": "No free port is left on the Live gateway(s) named in the detail"
            " (`pool exhausted`), or the database is unavailable: retry later",
        }
    },
)
def create_installation(
    body: InstallationCreate, principal: Admin, client: ClientDep, ctx: Ctx
) -> InstallationCreated:
    how = _origin(principal, client)
    services = ctx.services
    inst = services.registry.add(
        body.code,
        body.label,
        kind=body.kind,
        ipv4=body.ip,
        ipv6=body.ipv6,
        port=body.port,
        gateway=body.gateway,
        origin=how,
    )
    token = services.access.issue_token(inst.code, how)
    return InstallationCreated(**ctx.out(inst).model_dump(), token=token)


MAX_OFFSET = 2**63 - 1
"""The largest offset the stores take (a 64-bit integer in SQLite and PostgreSQL)."""


@installation_routes.get(
    "/installations",
    summary="List installations by code (admin)",
    dependencies=[Depends(admin)],
)
def list_installations(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> InstallationList:
    found = ctx.services.registry.list(limit=limit, offset=offset)
    return InstallationList(
        installations=[ctx.out(inst) for inst in found],
        total=ctx.services.store.count(),
        limit=limit,
        offset=offset,
    )


@installation_routes.get(
    "/installations/{code}",
    summary="One installation (admin, or the installation itself)",
    dependencies=[Depends(admin_or_itself)],
)
def get_installation(code: str, ctx: Ctx) -> InstallationOut:
    return ctx.out(ctx.services.registry.get(code))


@installation_routes.patch(
    "/installations/{code}",
    summary="Change fields (admin); null clears ip, ipv6 or port",
)
def patch_installation(
    code: str, body: InstallationPatch, principal: AdminFor, client: ClientDep, ctx: Ctx
) -> InstallationOut:
    change = body.to_change()
    inst = ctx.services.registry.update(code, change, _origin(principal, client))
    return ctx.out(inst)


@installation_routes.delete(
    "/installations/{code}",
    status_code=204,
    response_class=Response,
    summary="Remove an installation (admin): its names leave the zone",
)
def delete_installation(code: str, principal: AdminFor, client: ClientDep, ctx: Ctx) -> Response:
    ctx.services.registry.remove(code, _origin(principal, client))
    return Response(status_code=204)


@installation_routes.post(
    "/installations/{code}/token",
    summary="Replace the installation's token (admin, or the installation itself)",
)
def rotate_token(code: str, principal: AdminOrItself, client: ClientDep, ctx: Ctx) -> TokenOut:
    services = ctx.services
    canonical = principal.code or services.registry.get(code).code
    token = services.access.issue_token(canonical, _origin(principal, client))
    return TokenOut(code=canonical, token=token)


@installation_routes.get(
    "/installations/{code}/history",
    summary="The audit history (admin, or the installation itself)",
)
def history(code: str, principal: AdminOrItself, ctx: Ctx) -> HistoryOut:
    services = ctx.services
    try:
        canonical = principal.code or services.registry.get(code).code
    except NotFoundError:
        canonical = code  # a removed installation keeps its history (for an admin)
    entries = services.store.history(canonical)
    if not entries:
        raise NotFoundError(f"no installation with code {code!r}")
    return HistoryOut(code=canonical, history=[HistoryEntry.model_validate(e) for e in entries])


# -- heartbeat ----------------------------------------------------------------------------


HEARTBEAT_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/HeartbeatIn"}}},
        "required": True,
    }
}
"""The request body as the OpenAPI document describes it: the route reads the raw body
itself (`http/heartbeat.py`); `create_app` adds the `HeartbeatIn` schema."""


@heartbeat_routes.post(
    "/installations/{code}/heartbeat",
    response_model=HeartbeatOut,
    summary="I am alive, on this public port: the address is where this comes from",
    dependencies=[Depends(_bearer)],
    openapi_extra=HEARTBEAT_BODY,
)
async def heartbeat(code: str, request: Request, ctx: Ctx) -> Response:
    """Submit a beat to the group-committing writer and tell how the world sees the
    installation. A beat that changes nothing DNS serves moves only last-seen (no new
    serial); one from a new address or port changes the records and the serial."""
    reply = await heartbeat_core.beat(
        ctx,
        code,
        authorization=request.headers.get("authorization"),
        content_type=request.headers.get("content-type"),
        body=await request.body(),
        client=ctx.client(request),
    )
    return reply.response()


# -- probe --------------------------------------------------------------------------------


@heartbeat_routes.post(
    "/installations/{code}/probe",
    summary="Dial my registered public address and port from outside, and say what"
    " answered (the installation, from that address; one probe per few seconds)",
    responses={429: {"model": ErrorOut, "description": "Probed too recently: see Retry-After"}},
)
async def probe(inst: Itself, token: Token, client: ClientDep, ctx: Ctx) -> ProbeOut:
    """The service connects to the installation's registered public port, at the
    registered address the request comes from (403 from any other address: the probe
    never dials an address the caller picks), sends `CONTROPARTE-PROBE <nonce>` and
    checks a `controparte agent listen` answer against the request's own token
    (`model/probe.py`). Connect timeout 3 s, one line read within 2 s."""
    target = choose_target(inst, client.address)
    ctx.services.probes.acquire(inst.code)
    assert token is not None  # `Itself` has authenticated it
    sources = ctx.services.settings.probe_sources
    report = await run_probe(target, code=inst.code, token=token, sources=sources)
    await run_in_threadpool(ctx.services.results.record_probe, inst, [report], inst)
    return ProbeOut.model_validate(report.to_json())


# -- counterparts: what the registry knows of them, and the probe of one ------------------


@link_routes.get(
    "/installations/{code}/counterparts",
    summary="Every installation linked to this one, either direction, with what the"
    " registry knows of each (admin, or the installation itself)",
    dependencies=[Depends(admin_or_itself)],
)
def list_counterparts(code: str, ctx: Ctx) -> CounterpartsOut:
    """For each counterpart: what DNS publishes, the port MxServer listens on, when it
    was last seen and whether that is longer ago than the service's `stale_after`,
    its agent's version, and the links between the two."""
    settings = ctx.services.settings
    inst = ctx.services.registry.find(code)
    found = counterpart_facts.counterparts(ctx.services.registry, inst)
    return CounterpartsOut.model_validate(
        {
            "code": inst.code,
            "counterparts": [
                counterpart_facts.view(c, settings.zone, settings.stale_after) for c in found
            ],
        }
    )


def linked(inst: Itself, body: ProbeCounterpartIn, ctx: Ctx) -> Counterpart:
    """The counterpart the body names, linked to the requester (a store read: in the
    thread pool)."""
    return linked_counterpart(ctx.services.registry, inst, body.counterpart)


@heartbeat_routes.post(
    "/installations/{code}/probe-counterpart",
    summary="Dial a linked counterpart's registered public address(es) and port from"
    " outside, connect only (the installation; rate-limited per requester and per"
    " counterpart)",
    responses={
        429: {
            "model": ErrorOut,
            "description": "This counterpart was probed too recently, or this"
            " installation asked for too many probes: see Retry-After",
        }
    },
)
async def probe_counterpart(
    inst: Itself, counterpart: Annotated[Counterpart, Depends(linked)], ctx: Ctx
) -> ProbeCounterpartOut:
    """403 when the counterpart is not linked to this installation, or has no
    registered address or public port: the service dials only those, never an address
    the requester names. One probe of a counterpart per 5 s whoever asks, and 10 per
    minute per requester (429 with Retry-After). Each registered address (IPv4, IPv6)
    is dialled at the public port, at once; connect timeout 3 s; nothing is sent."""
    services = ctx.services
    targets = counterpart_targets(counterpart.installation)
    services.probe_requesters.acquire(inst.code)
    services.counterpart_probes.acquire(counterpart.installation.code)
    sources = services.settings.probe_sources
    reports = await asyncio.gather(*(run_dial(t, sources=sources) for t in targets))
    await run_in_threadpool(services.results.record_probe, counterpart.installation, reports, inst)
    return ProbeCounterpartOut(reports=[ProbeOut.model_validate(r.to_json()) for r in reports])


# -- relay: a linked counterpart's agent dials this installation (service/relay.py) -------

RELAY_MAX_WAIT = 30.0
"""The longest `wait` of the relay's long polls (seconds)."""
RELAY_RECHECK = 0.2
"""Seconds between two reads of a request whose outcome a requester waits for."""
AGENT_RECHECK = 0.5
"""Seconds between two looks for new requests while an agent waits for them."""

RelayWait = Annotated[
    float, Query(ge=0, le=RELAY_MAX_WAIT, description="Seconds to wait for something to tell")
]


@heartbeat_routes.post(
    "/installations/{code}/relay",
    status_code=202,
    summary="Have a linked counterpart's agent dial my registered public address and port",
    responses={
        409: {"model": ErrorOut, "description": "The counterpart's agent takes no relay requests"},
        429: {"model": ErrorOut, "description": "Asked too recently: see Retry-After"},
    },
)
def relay_ask(body: RelayCreate, inst: Itself, ctx: Ctx) -> RelayCreated:
    """The counterpart (linked to this installation for some feature, either way; else
    403) must run an agent that asks for relay requests (else 409). Its agent dials this
    installation's registered public port at its registered address (never one the
    caller names), sends `CONTROPARTE-PROBE <nonce>` and reports; read the outcome at
    `.../relay/{id}`. One request per installation per 5 s, 4 pending per agent (429)."""
    asked = ctx.services.relay.request(inst, body.counterpart, body.family)
    return RelayCreated.model_validate(asked, from_attributes=True)


@heartbeat_routes.get(
    "/installations/{code}/relay/{request_id}",
    summary="The outcome of my relay request (waits up to `wait` seconds for it)",
)
async def relay_outcome(
    request_id: str, inst: Itself, token: Token, ctx: Ctx, wait: RelayWait = 0
) -> RelayOut:
    """Answers when the agent has reported, the request expired, or `wait` elapsed. The
    line the port answered is judged against this request's own token, as the probe's
    is: `nonce_verified` true means this installation's agent answered there."""
    relay = ctx.services.relay
    deadline = time.monotonic() + wait
    while True:
        found, state = await run_in_threadpool(relay.get, inst, request_id)
        left = deadline - time.monotonic()
        if state != "pending" or left <= 0:
            break
        await asyncio.sleep(min(RELAY_RECHECK, left))
    assert token is not None  # `Itself` has authenticated it
    report = relay_report(found, token)
    return RelayOut(state=state, report=None if report is None else ProbeOut.model_validate(report))


@heartbeat_routes.get(
    "/installations/{code}/relay-requests",
    summary="The dials my agent is asked to make (waits up to `wait` seconds for one)",
)
async def relay_tasks(inst: Itself, request: Request, ctx: Ctx, wait: RelayWait = 0) -> RelayTasks:
    """Records that this installation's agent takes relay requests, and hands it those
    waiting, now claimed: each to be dialled and reported once, before it expires."""
    relay = ctx.services.relay
    deadline = time.monotonic() + wait
    claimed = await run_in_threadpool(relay.claim, inst)
    while not claimed and (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(AGENT_RECHECK, left))
        if await request.is_disconnected():
            break
        if await run_in_threadpool(relay.waiting, inst):
            claimed = await run_in_threadpool(relay.claim, inst)
    return RelayTasks(requests=[RelayTask.model_validate(r, from_attributes=True) for r in claimed])


@heartbeat_routes.post(
    "/installations/{code}/relay-requests/{request_id}",
    status_code=204,
    response_class=Response,
    summary="My agent's report of one dial it was asked to make",
)
def relay_report_in(
    request_id: str, body: RelayDone, inst: Itself, client: ClientDep, ctx: Ctx
) -> Response:
    """Only for a request this installation's agent claimed, not reported yet and not
    expired (404 otherwise). The address the report comes from is kept as the dial's
    source."""
    ctx.services.relay.finish(
        inst,
        request_id,
        result=Reach(body.result),
        elapsed_ms=body.elapsed_ms,
        line=body.line,
        source=client.address,
    )
    ctx.services.results.record_relay(inst, request_id, Reach(body.result), body.elapsed_ms)
    return Response(status_code=204)


@dataclass(frozen=True, slots=True)
class PairQuery:
    """A plan's ends and feature, from the query (`/v1/plan`, `/v1/flow-results`)."""

    caller: Annotated[str, Query(description="Code, label or <label>.<zone>")]
    callee: Annotated[str, Query(description="Code, label or <label>.<zone>")]
    feature: Annotated[str, Query(description="A feature id of the catalog")]


Pair = Annotated[PairQuery, Depends()]


# -- flow results: what was last seen of each flow (service/results.py) --------------------


@heartbeat_routes.post(
    "/installations/{code}/flow-results",
    summary="Record what my doctor run found of each flow (the installation)",
)
def doctor_report(body: DoctorReportIn, inst: Itself, ctx: Ctx) -> DoctorReportOut:
    """`controparte doctor --report` sends this after its run. Each plan must have this
    installation as its caller or callee (else 403, nothing recorded); plans that are
    not links, flows not in the service's plan now and flows tested on other ports are
    skipped and named. A warning is recorded as passed."""
    reported = [
        ReportedPlan(
            p.caller,
            p.callee,
            p.feature,
            tuple(ReportedFlow(f.id, f.ports, f.status, f.reason) for f in p.flows),
        )
        for p in body.plans
    ]
    recorded, skipped = ctx.services.results.record_doctor(inst, reported)
    return DoctorReportOut.model_validate(
        {"recorded": recorded, "skipped": skipped}, from_attributes=True
    )


def _result_out(result: FlowResult) -> FlowResultOut:
    return FlowResultOut.model_validate(result, from_attributes=True)


@plan_routes.get(
    "/flow-results",
    summary="The flows of a plan with what was last seen of each (admin, or either end)",
)
def flow_results(ctx: Ctx, token: Token, client: ClientDep, pair: Pair) -> FlowResultsOut:
    """Credentials as for `/v1/plan`. Each flow of the plan as it stands now is shown
    with its newest passed or failed result on its ports now, else its newest untested
    one (`unknown`: none); `history` holds every result kept, newest first."""
    _may_see(ctx, token, client, pair)
    found = ctx.services.results.for_pair(pair.caller, pair.callee, pair.feature)
    plan = found.plan
    return FlowResultsOut(
        caller=plan.caller.code,
        callee=plan.callee.code,
        feature=plan.feature.id,
        flows=[
            FlowStateOut(
                id=flow.id,
                description=flow.description,
                direction=flow.direction.value,
                ports=flow.ports_text,
                outcome=found.outcome(flow).value,
                result=None if (shown := found.shown.get(flow.id)) is None else _result_out(shown),
            )
            for flow in plan.flows
        ],
        history=[_result_out(r) for r in found.history],
    )


# -- resolution ---------------------------------------------------------------------------


@resolve_routes.get(
    "/resolve/{name}",
    summary="Resolve a code, label or <label>.<zone> (no credentials: DNS publishes it)",
)
def resolve(name: str, ctx: Ctx) -> ResolveOut:
    settings = ctx.services.settings
    inst = ctx.services.registry.find(name)
    return ResolveOut.model_validate(public_view(inst, settings.zone, settings.stale_after))


# -- counterpart links and plans ------------------------------------------------------------


def _link_out(link: Link) -> LinkOut:
    return LinkOut(a=link.a, b=link.b, feature=link.feature, created=link.created)


@link_routes.get(
    "/links",
    summary="Links, or those of one installation (admin; an installation: its own)",
)
def list_links(
    ctx: Ctx,
    token: Token,
    client: ClientDep,
    code: Annotated[
        str | None,
        Query(description="Only links where this installation is caller or callee"),
    ] = None,
) -> LinkList:
    """Every link (admin), or those where `code` is caller or callee (admin, or the
    installation `code` itself)."""
    if code is None:
        ctx.gate.admin(token, client)
    else:
        ctx.gate.admin_or_installation(token, client, code)
    return LinkList(links=[_link_out(link) for link in ctx.services.links.list(code)])


@link_routes.post(
    "/links",
    status_code=201,
    summary="Link caller a to callee b for features (admin); 200 when all were there",
)
def create_links(
    body: LinkCreate, principal: Admin, client: ClientDep, ctx: Ctx, response: Response
) -> LinksAdded:
    """Idempotent: a link already there is kept and reported with `new: false`; the
    answer is 201 when the request made at least one link, 200 otherwise."""
    results = ctx.services.links.add(
        body.a, body.b, body.features, origin=_origin(principal, client)
    )
    if not any(r.created for r in results):
        response.status_code = 200
    return LinksAdded(
        links=[LinkAdded(**_link_out(r.link).model_dump(), new=r.created) for r in results]
    )


@link_routes.delete(
    "/links/{a}/{b}",
    summary="Remove the links from a to b, or only `feature`'s (admin); the links removed",
)
def delete_links(
    *,
    a: str,
    b: str,
    principal: Admin,
    client: ClientDep,
    ctx: Ctx,
    feature: Annotated[str | None, Query(description="Only this feature's link")] = None,
) -> LinkList:
    """Links from b to a are left alone; 404 when there was no link to remove."""
    removed = ctx.services.links.remove(a, b, feature, origin=_origin(principal, client))
    return LinkList(links=[_link_out(link) for link in removed])


PlanFormat = Literal["json", "nftables", "iptables", "windows"]


@plan_routes.get(
    "/plan",
    response_model=PlanOut,
    summary="What must be open for caller to use feature with callee (admin, or either end)",
    responses={
        200: {
            "description": "The plan (JSON, schema controparte.plan/1) or, with a firewall"
            " format, that side's rules as a script (text/plain)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def get_plan(
    *,
    ctx: Ctx,
    token: Token,
    client: ClientDep,
    pair: Pair,
    side: Annotated[
        Literal["caller", "callee"] | None,
        Query(description="json: only this side's rules; firewall formats: default caller"),
    ] = None,
    fmt: Annotated[PlanFormat, Query(alias="format", description="json or a firewall")] = "json",
) -> PlanOut | Response:
    """Needs a credential: an admin token, or the token of the caller or the callee
    when the two are linked (either way, for any feature: else 403). A plan shows what
    DNS publishes anyway (addresses, public ports) but also whether an end is Live and
    the port MxServer listens on behind NAT, which only linked counterparts (and
    admins) need to know."""
    _may_see(ctx, token, client, pair)
    found = ctx.services.plans.plan(pair.caller, pair.callee, pair.feature)
    role = None if side is None else PlanRole(side)
    if fmt == "json":
        return PlanOut.model_validate(plan_dict(found, role))
    text = render_rules(found, role or PlanRole.CALLER, fmt)
    return PlainTextResponse(text)


def _may_see(ctx: Context, token: str | None, client: Client, pair: PairQuery) -> None:
    """AuthError or ForbiddenError unless the credential is an admin token, or the
    token of the caller or the callee when the two are linked."""
    principal = ctx.gate.admin_or_either(token, client, (pair.caller, pair.callee))
    if principal.code is not None:
        _linked_ends(ctx, principal.code, (pair.caller, pair.callee))


def _linked_ends(ctx: Context, code: str, names: tuple[str, str]) -> None:
    """Raise ForbiddenError unless the ends `names` are installation `code` and one
    linked to it (the same installation at both ends is left to the planner)."""
    registry = ctx.services.registry
    inst = registry.get(code)
    others = [o for o in map(registry.find, names) if o.code.lower() != code.lower()]
    if not others:
        return
    try:
        linked_counterpart(registry, inst, others[0].code)
    except ForbiddenError:
        raise ForbiddenError(
            f"{others[0].code!r} is not linked to {inst.code!r}: an installation's token"
            " gets the plan only with a linked counterpart (controparte link add);"
            " any other pair needs an admin token"
        ) from None


router = APIRouter()
"""Every route above, by group, in this order."""
for routes in (installation_routes, heartbeat_routes, resolve_routes, link_routes, plan_routes):
    router.include_router(routes)

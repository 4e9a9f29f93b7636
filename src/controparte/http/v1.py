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
| GET    /v1/resolve/{name}                | anyone (what DNS publishes)  |

Credentials are `Authorization: Bearer <token>` (see `auth.py` for the rules). Changes
are made through the registry as `Origin(actor, via="api", source=<client address>)`;
heartbeats through the heartbeat writer. Routes that touch the store are plain `def`
(run in the thread pool), so the event loop that also serves DNS over TCP never blocks.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from controparte.errors import ControparteError, NotFoundError, ValidationError
from controparte.http.auth import Principal
from controparte.http.clientaddr import Client
from controparte.http.context import Context
from controparte.http.metrics import HEARTBEATS
from controparte.http.schemas import (
    ErrorOut,
    HeartbeatIn,
    HeartbeatOut,
    HistoryEntry,
    HistoryOut,
    InstallationCreate,
    InstallationCreated,
    InstallationList,
    InstallationOut,
    InstallationPatch,
    ResolveOut,
    TokenOut,
)
from controparte.model import Installation
from controparte.service.heartbeat import Beat
from controparte.service.status import fqdn, public_view
from controparte.store import Origin

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (401, "Missing or wrong credentials"),
        (403, "The credential does not allow this"),
        (404, "No such installation"),
        (409, "Conflicts with another installation"),
        (422, "A value breaks a rule (the detail names the field)"),
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


router = APIRouter(prefix="/v1", responses=_ERRORS)

# -- management ---------------------------------------------------------------------------


@router.post(
    "/installations",
    status_code=201,
    response_model=InstallationCreated,
    tags=["installations"],
    summary="Register an installation (admin); its token is in the answer, once",
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
        origin=how,
    )
    token = services.access.issue_token(inst.code, how)
    return InstallationCreated(**ctx.out(inst).model_dump(), token=token)


@router.get(
    "/installations",
    response_model=InstallationList,
    tags=["installations"],
    summary="List installations by code (admin)",
)
def list_installations(
    principal: Admin,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> InstallationList:
    found = ctx.services.registry.list(limit=limit, offset=offset)
    return InstallationList(
        installations=[ctx.out(inst) for inst in found],
        total=ctx.services.store.count(),
        limit=limit,
        offset=offset,
    )


@router.get(
    "/installations/{code}",
    response_model=InstallationOut,
    tags=["installations"],
    summary="One installation (admin, or the installation itself)",
)
def get_installation(code: str, principal: AdminOrItself, ctx: Ctx) -> InstallationOut:
    return ctx.out(ctx.services.registry.get(code))


@router.patch(
    "/installations/{code}",
    response_model=InstallationOut,
    tags=["installations"],
    summary="Change fields (admin); null clears ip, ipv6 or port",
)
def patch_installation(
    code: str, body: InstallationPatch, principal: AdminFor, client: ClientDep, ctx: Ctx
) -> InstallationOut:
    change = body.to_change()
    inst = ctx.services.registry.update(code, change, _origin(principal, client))
    return ctx.out(inst)


@router.delete(
    "/installations/{code}",
    status_code=204,
    response_class=Response,
    tags=["installations"],
    summary="Remove an installation (admin): its names leave the zone",
)
def delete_installation(code: str, principal: AdminFor, client: ClientDep, ctx: Ctx) -> Response:
    ctx.services.registry.remove(code, _origin(principal, client))
    return Response(status_code=204)


@router.post(
    "/installations/{code}/token",
    response_model=TokenOut,
    tags=["installations"],
    summary="Replace the installation's token (admin, or the installation itself)",
)
def rotate_token(code: str, principal: AdminOrItself, client: ClientDep, ctx: Ctx) -> TokenOut:
    services = ctx.services
    canonical = principal.code or services.registry.get(code).code
    token = services.access.issue_token(canonical, _origin(principal, client))
    return TokenOut(code=canonical, token=token)


@router.get(
    "/installations/{code}/history",
    response_model=HistoryOut,
    tags=["installations"],
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


@router.post(
    "/installations/{code}/heartbeat",
    response_model=HeartbeatOut,
    tags=["heartbeat"],
    summary="I am alive, on this public port: the address is where this comes from",
)
async def heartbeat(body: HeartbeatIn, inst: Itself, client: ClientDep, ctx: Ctx) -> HeartbeatOut:
    """Submit a beat to the group-committing writer and tell how the world sees the
    installation. A beat that changes nothing DNS serves moves only last-seen (no new
    serial); one from a new address or port changes the records and the serial."""
    if client.address is None:
        raise ValidationError(
            "Forwarded",
            f"a trusted proxy forwarded {client.bad_hop!r}, which is not an IP address",
        )
    services = ctx.services
    beat = Beat(inst.code, client.address, body.port, body.private_port, body.version)
    try:
        result = await asyncio.wrap_future(services.heartbeats.submit(beat))
    except ControparteError:
        ctx.metrics.inc(HEARTBEATS, result="rejected")
        raise
    ctx.metrics.inc(HEARTBEATS, result="changed" if result.changed else "unchanged")
    serial = await run_in_threadpool(ctx.serial)
    seen = ipaddress.ip_address(client.address)
    now = result.installation
    settings = services.settings
    return HeartbeatOut(
        code=now.code,
        label=now.label,
        fqdn=fqdn(now, settings.zone),
        ip=str(seen) if seen.version == 4 else None,
        ipv6=str(seen) if seen.version == 6 else None,
        port=now.port,
        changed=result.changed,
        serial=serial,
        stale_after=settings.stale_after,
        heartbeat_interval=settings.heartbeat_interval,
    )


# -- resolution ---------------------------------------------------------------------------


@router.get(
    "/resolve/{name}",
    response_model=ResolveOut,
    tags=["resolve"],
    summary="Resolve a code, label or <label>.<zone> (no credentials: DNS publishes it)",
)
def resolve(name: str, ctx: Ctx) -> ResolveOut:
    settings = ctx.services.settings
    inst = ctx.services.registry.find(name)
    return ResolveOut.model_validate(public_view(inst, settings.zone, settings.stale_after))

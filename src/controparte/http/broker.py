"""The start-live broker's HTTP app (served over HTTPS by `controparte broker serve`):

| method and path        | who                                                      |
| ---------------------- | -------------------------------------------------------- |
| POST /v1/start/{label} | a linked counterpart (its token, `{"caller": CODE}`), or |
|                        | the Live installation itself (its own token, no body)    |
| GET  /healthz          | anyone (as the service's: 503 while the database is down)|

`POST /v1/start/{label}` (`label`: the Live installation's label, code or
`<label>.<zone>`) answers `{gateway, port, ready, detail}` (`service/broker.py`): 404 for
no such installation, 401 for a token that is not the caller's (counted by the
failed-authentication throttle like every other), 403 for a caller not linked to it or
an installation that is not Live, 422 when it has no placement yet, 429 beyond
`broker_rate` starts a minute per caller. Each start answered is logged in one line
(label, code, caller, client address, gateway, port, ready, whether it joined a wake
under way, the time taken); a refusal in one line too. No token is ever logged.
Errors are answered from the one table, as by the service (`app.add_error_handlers`).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import Body, FastAPI, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

import controparte
from controparte.errors import ControparteError
from controparte.http.app import RequestMetrics, add_error_handlers, health_reply
from controparte.http.bodylimit import BodyLimit
from controparte.http.clientaddr import Client
from controparte.http.context import Context
from controparte.http.schemas import ErrorOut, Health, HealthDown
from controparte.http.v1 import Token
from controparte.model import Installation
from controparte.service.broker import (
    Placement,
    Wake,
    Waker,
    live_target,
    may_start,
    placement,
)
from controparte.service.probe import ProbeLimiter
from controparte.service.services import Services

log = logging.getLogger("controparte.broker")


class StartIn(BaseModel):
    caller: str | None = Field(
        None,
        description="The code of the installation whose token this is (a linked"
        " counterpart); omitted: the Live installation itself",
    )


class StartOut(BaseModel):
    gateway: str = Field(description="The gateway's address the Live installation is reached on")
    port: int = Field(description="Its port on the gateway")
    gateway_name: str | None = Field(
        None, description="The gateway's name in the Live pool (null: placed by hand)"
    )
    ready: bool = Field(description="Whether the wake hook said it is up")
    detail: str = Field("", description="Why it is not ready, when it is not")


_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (401, "Missing credentials, or a token that is not the caller's"),
        (403, "The caller is not linked to this installation, or it is not Live"),
        (404, "No such installation"),
        (422, "The request does not have the documented shape, or no placement yet"),
        (429, "Too many starts from this caller: see Retry-After"),
    )
}


def create_broker_app(services: Services, waker: Waker, limiter: ProbeLimiter) -> RequestMetrics:
    """The broker's app over `services` (see the module)."""
    ctx = Context.of(services)
    metrics = ctx.metrics
    app = FastAPI(
        title="controparte start-live broker",
        version=controparte.__version__,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    add_error_handlers(app, metrics, services.throttle.block)

    @app.post(
        "/v1/start/{label}",
        tags=["start-live"],
        responses=_ERRORS,
        summary="Where a Live installation is reached; wake it up",
    )
    async def start(
        label: str,
        request: Request,
        token: Token,
        body: Annotated[StartIn | None, Body()] = None,
    ) -> StartOut:
        began = time.monotonic()
        client = ctx.client(request)
        caller = None if body is None else body.caller
        try:
            live, who, place = await run_in_threadpool(
                _authorize, ctx, label, token, caller, client
            )
            limiter.acquire(who.code)
        except ControparteError as exc:
            # the caller is not named: as presented it may be anything, a token too
            log.info("start %s from %s refused: %s", label, client.key, exc)
            raise
        outcome, joined = await waker.wake(Wake(live.code, live.label, place))
        log.info(
            "start %s (%s) for %s from %s: gateway %s port %d ready %s%s (%d ms)%s",
            live.label,
            live.code,
            who.code,
            client.key,
            place.gateway,
            place.port,
            "yes" if outcome.ready else "no",
            ", joined a wake under way" if joined else "",
            round((time.monotonic() - began) * 1000),
            f": {outcome.detail}" if outcome.detail else "",
        )
        return StartOut(
            gateway=place.gateway,
            port=place.port,
            gateway_name=place.gateway_name,
            ready=outcome.ready,
            detail=outcome.detail,
        )

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["service"],
        summary="Health: the database (503 when it cannot be reached)",
        responses={503: {"model": HealthDown, "description": "The database cannot be reached"}},
    )
    def healthz() -> Response:
        return health_reply(ctx.health.report(), None).response()

    return RequestMetrics(BodyLimit(app, services.settings.http_max_body, metrics), metrics)


def _authorize(
    ctx: Context, label: str, token: str | None, caller: str | None, client: Client
) -> tuple[Installation, Installation, Placement]:
    """The Live installation, the authenticated caller and the placement (store reads:
    in the thread pool)."""
    registry = ctx.services.registry
    live = live_target(registry, label)
    who = ctx.gate.installation(token, client, caller or live.code)
    may_start(registry, live, who)
    return live, who, placement(registry, live)

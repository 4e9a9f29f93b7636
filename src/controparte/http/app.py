"""The HTTP service, one FastAPI app composed explicitly:

- `/v1/...`: the versioned JSON API (`v1.py`), described by `/openapi.json`;
- `/nic/update`: DynDNS2 (`nic.py`);
- `/healthz`: this process's health (`health_reply`): 200 while the database answers,
  503 when it does not, told without waiting for it;
- `/metrics`: Prometheus text format (`metrics.py`), with `controparte_database_up`;
- `/ui/...`: the dashboard (`controparte.web`, its own error pages).

Every error answer is `{"error": <kind>, "detail": <message>}` with the HTTP status of
`errors.response_for`; nothing is improvised. Errors the service raises on purpose are
answered as they are; the framework's own refusals (request validation, a body that is
not JSON, an unknown path, a wrong method) become errors of the tree first
(`replies.invalid_request`, `replies.http_refusal`). 401 answers carry a Bearer
challenge, 429 answers a Retry-After, 405 answers an Allow header; `replies.py` writes
them for every route. An unexpected exception is logged, counted and answered 500
without details. The OpenAPI document describes these bodies (`ErrorOut`) for every
error status, request validation included.

`create_app` composes, outermost first: `RequestMetrics` (counts every request by route
template), `BodyLimit` (`bodylimit.py`: 413 for a body above `http_max_body`, before
any route), `HeartbeatShell` (`heartbeat.py`: answers `POST
/v1/installations/{code}/heartbeat` itself and passes every other request on), then the
FastAPI app. Both are pure ASGI; the heartbeat, the hottest request by far, never
enters FastAPI's middleware, routing or dependency machinery.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import controparte
from controparte.errors import ControparteError, StorageUnavailableError
from controparte.http import nic, v1
from controparte.http.apidocs import add_docs
from controparte.http.bodylimit import BodyLimit
from controparte.http.context import Context, DnsSource
from controparte.http.heartbeat import HeartbeatShell
from controparte.http.metrics import HTTP_REQUESTS, UPDATE_WAYS, Metrics
from controparte.http.replies import (
    Reply,
    error_reply,
    http_refusal,
    internal_reply,
    invalid_request,
    render,
)
from controparte.http.schemas import ErrorOut, Health, HealthDown, HeartbeatIn
from controparte.service.health import HealthReport, ServedZone
from controparte.service.metrics import (
    CONTENT_TYPE,
    ZONE_SERIAL,
    ZONE_SERIAL_HELP,
    Family,
    exposition,
    gauge,
    labelled,
)
from controparte.service.services import Services
from controparte.web.app import create_web

log = logging.getLogger("controparte.http")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """ASGI middleware: counts every HTTP request by route template, method and status
    (the template, not the path, so the number of series stays bounded)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.inc(HTTP_REQUESTS, route=route, method=method, status=str(status))


def create_app(
    services: Services, dns: DnsSource | None = None, *, fast_heartbeat: bool = True
) -> RequestMetrics:
    """The HTTP app over `services` (see the module); `dns` (the DNS server, when it
    runs in this process) supplies its counters, the zone serial it serves and its
    age to `/metrics` and `/healthz`. With `fast_heartbeat` false, heartbeats go
    through the FastAPI route instead of the pure-ASGI shell (the same function, the
    same answers: for tests)."""
    ctx = Context.of(services, dns)
    api = create_api(ctx)
    inner: ASGIApp = HeartbeatShell(api, ctx) if fast_heartbeat else api
    return RequestMetrics(
        BodyLimit(inner, services.settings.http_max_body, ctx.metrics), ctx.metrics
    )


def create_api(ctx: Context) -> FastAPI:
    """The FastAPI app over `ctx`: every route, the error handlers, the OpenAPI
    document (without the request metrics: `create_app` adds them around it)."""
    services = ctx.services
    metrics = ctx.metrics
    app = FastAPI(
        title="controparte",
        version=controparte.__version__,
        description="Installation-ID resolution: registry, heartbeats, DynDNS2, resolution."
        f" Installations are published in DNS as <label>.{services.settings.zone}",
        openapi_url="/openapi.json",
        docs_url=None,  # apidocs.add_docs: the page with its assets served here
        redoc_url=None,  # ReDoc loads its script from a CDN
    )
    add_docs(app)
    app.state.controparte = ctx
    app.include_router(v1.router)
    app.include_router(nic.router)
    app.mount(
        "/ui",
        create_web(services, client=lambda c: ctx.client(c).key, families=lambda: collect(ctx)),
    )
    _complete_openapi(app)

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["service"],
        summary="Health: the database (503 when it cannot be reached) and the zone served",
        responses={503: {"model": HealthDown, "description": "The database cannot be reached"}},
    )
    def healthz() -> Response:
        served = ctx.dns.served_zone() if ctx.dns is not None else None
        return health_reply(ctx.health.report(), served).response()

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["service"],
        summary="Prometheus metrics (text format 0.0.4)",
    )
    def metrics_endpoint() -> Response:
        return Response(exposition(collect(ctx)), media_type=CONTENT_TYPE)

    add_error_handlers(app, metrics, services.throttle.block)
    return app


def add_error_handlers(app: FastAPI, metrics: Metrics, block: float) -> None:
    """Answer every error of `app` from the one table (see the module): the service's
    errors, request validation, the framework's refusals, and anything unexpected
    (logged, counted, 500 without details). `block`: the throttle's block time, the
    Retry-After of a RateLimitedError that names none."""

    @app.exception_handler(ControparteError)
    async def service_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ControparteError)
        return error_reply(exc, metrics, block).response()

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = invalid_request(exc.errors())
        return error_reply(error, metrics, block).response()

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        allow = (exc.headers or {}).get("Allow")
        error = http_refusal(
            exc.status_code, request.method, request.url.path, allow, exc.__cause__
        )
        return error_reply(error, metrics, block).response()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return internal_reply(metrics).response()


_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def _complete_openapi(app: FastAPI) -> None:
    """Two things FastAPI cannot know, put in the OpenAPI document:
    - `HeartbeatIn` in the components: the heartbeat route reads its body itself, so
      FastAPI does not see the model (`v1.HEARTBEAT_BODY` refers to it). The schema is
      what FastAPI writes for a route that takes the model as its body.
    - request validation answers `ErrorOut` (`replies.invalid_request`), not FastAPI's
      own list of errors: a 422 FastAPI documents by itself refers to `ErrorOut`, and
      its `HTTPValidationError` and `ValidationError` schemas go."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas["HeartbeatIn"] = _body_schema(HeartbeatIn)
            schemas.setdefault("ErrorOut", ErrorOut.model_json_schema())
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            for operation in (op for ops in document["paths"].values() for op in ops.values()):
                for response in operation.get("responses", {}).values():
                    schema = response.get("content", {}).get("application/json", {})
                    if schema.get("schema", {}).get("$ref") == _FASTAPI_422:
                        schema["schema"] = {"$ref": "#/components/schemas/ErrorOut"}
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    router = APIRouter()

    async def takes(body: BaseModel) -> None:
        """Only documented."""

    takes.__annotations__ = {"body": model, "return": None}
    router.add_api_route("/", takes, methods=["POST"])
    schema = get_openapi(title="", version="", routes=router.routes)
    found: dict[str, Any] = schema["components"]["schemas"][model.__name__]
    return found


def health_reply(report: HealthReport, zone: ServedZone | None) -> Reply:
    """The answer of /healthz: `Health` (200) while the database answers; when it does
    not, 503 with `HealthDown`, the same fields and those of every error answer.

    503, because this process cannot serve a single API, heartbeat or DynDNS2 request
    then (each reads or writes the database; DNS goes on from its snapshot, but DNS is
    not behind the HTTP load balancer): a load balancer in front of several nodes
    should send requests elsewhere. When one node lost its way to the database, the
    others take its share; when every node did, none could have done better: the
    balancer answers its own 503, or (AWS ALB, Envoy's panic threshold) sends to them
    all anyway once all are unhealthy, and they answer 503 with Retry-After (DynDNS2
    911). A node reports 200 again after its first check that reads the database, so
    it returns to the pool by itself."""
    health = Health.of(report, zone)
    body = health.model_dump(mode="json")
    database = report.database
    if database.reachable:
        return Reply(200, render(body))
    served = "" if zone is None else f"; DNS serves serial {zone.serial} from its snapshot"
    down = StorageUnavailableError(
        f"the database cannot be reached since {body['database']['since']}"
        f" ({database.detail}){served}"
    )
    return Reply(503, render({**body, "error": type(down).__name__, "detail": str(down)}))


def collect(ctx: Context) -> list[Family]:
    """Every metric family, read now: the DNS server's (when DNS runs in this process,
    its counters, the serial it serves and the age of its snapshot), the HTTP layer's
    counters, updates by way, and the gauges of a health check (`HealthWatch`: whether
    the database answers, the installations and, when no DNS server runs here, the
    zone serial in the store, as last read)."""
    families: list[Family] = []
    services = ctx.services
    health = ctx.health.report()
    if ctx.dns is not None:
        families += ctx.dns.metric_families()
    families += ctx.metrics.families()
    updates: dict[str, float] = dict.fromkeys(UPDATE_WAYS, 0.0)
    for way, count in list(services.registry.changes.items()):
        updates[way] = updates.get(way, 0.0) + count
    updates["heartbeat"] += services.heartbeats.changed
    families.append(
        labelled(
            "controparte_updates_total",
            "counter",
            "Installations changed in this process, by the way the change came.",
            "way",
            updates,
        )
    )
    families.append(
        gauge(
            "controparte_database_up",
            "1 while the database answers this process's health checks, 0 when it does not.",
            1 if health.database.reachable else 0,
        )
    )
    if health.installations is not None:
        families.append(
            gauge(
                "controparte_installations", "Installations in the registry.", health.installations
            )
        )
    if ctx.dns is None and health.serial is not None:
        families.append(gauge(ZONE_SERIAL, ZONE_SERIAL_HELP, health.serial))
    return families

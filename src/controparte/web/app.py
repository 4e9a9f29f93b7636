"""The dashboard's ASGI app (`create_web`): the routes of every page module, the
static files (`static/`, served from the package: no CDN, no build step), the security
headers (`headers.py`) and one error page for every error of the tree (the status of
`errors.response_for`; a page that needs a session sends the browser to sign in),
and the sampling of the overview's counters (`rates.Sampler`, from the first request)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from controparte.errors import ControparteError, RateLimitedError, response_for
from controparte.service.metrics import Family
from controparte.service.services import Services
from controparte.web import installation, installations, overview, pair, signin
from controparte.web.headers import SecurityHeaders
from controparte.web.pages import Web, render
from controparte.web.rates import Sampler
from controparte.web.session import SignInNeededError, current

log = logging.getLogger("controparte.web")

STATIC = Path(__file__).parent / "static"


def _signin_needed(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInNeededError)
    return RedirectResponse(exc.location, 303)


def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControparteError)
    status = response_for(exc).http_status
    response = render(
        request, "error.html", current(request), status, kind=type(exc).__name__, detail=str(exc)
    )
    if isinstance(exc, RateLimitedError):
        response.headers["Retry-After"] = "60"
    return response


class Sampling:
    """Starts the overview's `Sampler` on the serving loop with the first request."""

    def __init__(self, app: ASGIApp, sampler: Sampler) -> None:
        self.app = app
        self.sampler = sampler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.sampler.ensure()
        await self.app(scope, receive, send)


def create_web(
    services: Services,
    *,
    client: Callable[[HTTPConnection], str],
    families: Callable[[], list[Family]],
) -> ASGIApp:
    """The dashboard over `services`; `client` tells a request's client address (the
    HTTP layer's trusted-proxy rule), `families` reads this process's metrics."""
    app = Starlette(
        routes=[
            *signin.routes,
            *overview.routes,
            *installations.routes,
            *installation.routes,
            *pair.routes,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={
            SignInNeededError: _signin_needed,
            ControparteError: _error,
        },
    )
    app.state.web = web = Web(services, client, families)
    sampler = Sampler(web.rates, lambda: overview.counters(families()))
    return SecurityHeaders(Sampling(app, sampler))

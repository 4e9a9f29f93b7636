"""What every page shares: the state of the dashboard (`Web`, in the app's state), the
templates (Jinja2, autoescaped: every value a user gave, codes and labels first, is
escaped) and `render`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jinja2
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse

from controparte.service.accounts import Session
from controparte.service.metrics import Family
from controparte.service.services import Services
from controparte.web.rates import Rates

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("controparte.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass
class Web:
    """The dashboard's state: the services, how to tell a request's client address
    (the HTTP layer's trusted-proxy rule) and the metrics of this process."""

    services: Services
    client: Callable[[HTTPConnection], str]
    """The request's client address, as the audit history records it."""
    families: Callable[[], list[Family]]
    """Every metric family of this process, read now."""
    rates: Rates = field(default_factory=lambda: Rates(time.monotonic()))
    """Made with the app, when the process starts."""


def web_of(request: HTTPConnection) -> Web:
    web: Web = request.app.state.web
    return web


def render(
    request: Request,
    template: str,
    session: Session | None,
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    """The page `template` with `values`, the session (for the header and the forms'
    token) and the root of the dashboard's paths."""
    page = TEMPLATES.get_template(template).render(
        session=session,
        csrf="" if session is None else session.row.csrf,
        root=request.scope.get("root_path", ""),
        **values,
    )
    return HTMLResponse(page, status_code=status)

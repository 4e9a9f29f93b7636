"""The installations' list (search by code, label or address; filter by kind and by
staleness; pages of `PAGE` by code, counted and cut by the store) and the form that
adds an installation (an operator's; its token is shown once, on the answer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controparte.model import Installation
from controparte.model.installation import Kind, utcnow
from controparte.service.status import is_stale
from controparte.store import Origin
from controparte.store.base import InstallationPage, InstallationQuery
from controparte.web.pages import render, web_of
from controparte.web.session import checked_form, operator, signed_in

PAGE = 50
"""Installations on one page of the list."""
MAX_TEXT = 200
"""Characters of a search at most."""


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of the list as the template shows it."""

    text: str
    kind: str
    stale: bool
    page: int
    result: InstallationPage
    stale_codes: frozenset[str]

    @property
    def pages(self) -> int:
        return max(1, -(-self.result.total // PAGE))

    def link(self, page: int) -> str:
        """The query string of `page` of the same search."""
        query: dict[str, str | int] = {"page": page}
        if self.text:
            query["q"] = self.text
        if self.kind:
            query["kind"] = self.kind
        if self.stale:
            query["stale"] = "1"
        return "?" + urlencode(query)


def _page_number(text: str) -> int:
    try:
        return max(1, min(int(text), 10**9))
    except ValueError:
        return 1


def listing(request: Request) -> Response:
    session = signed_in(request)
    web = web_of(request)
    params = request.query_params
    text = params.get("q", "").strip()[:MAX_TEXT]
    kind = params.get("kind", "")
    if kind not in {k.value for k in Kind}:
        kind = ""
    stale = params.get("stale", "") == "1"
    page = _page_number(params.get("page", "1"))
    stale_after = web.services.settings.stale_after
    now = utcnow()
    query = InstallationQuery(
        text=text,
        kind=kind or None,
        stale_before=now - timedelta(seconds=stale_after) if stale else None,
        limit=PAGE,
        offset=(page - 1) * PAGE,
    )
    result = web.services.store.search(query)
    stale_codes = frozenset(i.code for i in result.installations if is_stale(i, stale_after, now))
    shown = Listing(text, kind, stale, page, result, stale_codes)
    return render(request, "installations.html", session, listing=shown, kinds=list(Kind))


def new_form(request: Request) -> Response:
    session = signed_in(request)
    operator(session)
    return render(request, "new.html", session, kinds=list(Kind), values={}, error=None)


def _add(request: Request, form: dict[str, str], actor: str) -> tuple[Installation, str]:
    web = web_of(request)
    services = web.services
    origin = Origin(actor=actor, via="ui", source=web.client(request))
    inst = services.registry.add(
        form.get("code", "").strip(),
        form.get("label", "").strip(),
        kind=form.get("kind", "onprem"),
        ipv4=form.get("ip", "").strip() or None,
        ipv6=form.get("ipv6", "").strip() or None,
        port=form.get("port", "").strip() or None,
        origin=origin,
    )
    return inst, services.access.issue_token(inst.code, origin)


async def add(request: Request) -> Response:
    session, form = await checked_form(request)
    inst, token = await run_in_threadpool(_add, request, form, session.account)
    return render(request, "token.html", session, 201, inst=inst, token=token, created=True)


routes = [
    Route("/installations", listing, methods=["GET"]),
    Route("/installations/new", new_form, methods=["GET"]),
    Route("/installations/new", add, methods=["POST"]),
]

"""Signing in and out.

The sign-in form takes an account's name and password, or the admin token (the admin
token in a form field, never in an address). Before any session, the form is guarded by
a cookie of its own (`PRESESSION`, a random value the form repeats), so another site
cannot sign a browser in to an account of its choosing. A wrong name, password or token
is counted by the failed-authentication throttle like the API's, per client address.
Signing out ends the session in the store (every node), then clears the cookie."""

from __future__ import annotations

import hmac
import logging
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from controparte.errors import AuthError
from controparte.service.accounts import ADMIN, Session
from controparte.store.base import Role
from controparte.web.pages import render, web_of
from controparte.web.session import COOKIE, CSRF_FIELD, current, read_form, set_cookie

log = logging.getLogger("controparte.web")

PRESESSION = "controparte_signin"


def _next(request: Request, wanted: str) -> str:
    """Where to go after signing in: a page of the dashboard, else the overview."""
    root = request.scope.get("root_path", "")
    if wanted.startswith(f"{root}/") and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    return f"{root}/"


def _form(request: Request, error: str | None = None, status: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "signin.html",
        None,
        status,
        form_token=token,
        next=_next(request, request.query_params.get("next", "")),
        error=error,
    )
    set_cookie(response, request, PRESESSION, token)
    return response


def signin_page(request: Request) -> Response:
    if current(request) is not None:
        return RedirectResponse(_next(request, request.query_params.get("next", "")), 303)
    return _form(request)


ACCOUNT_CLAIM = "dashboard-account"
"""What the throttle counts a wrong name or password against (never the name given)."""


def _open(request: Request, form: dict[str, str]) -> Session:
    """A session for the form's account or admin token (AuthError otherwise; the
    throttle counts the failure, logged without the name given, and may block the
    address: RateLimitedError)."""
    web = web_of(request)
    services = web.services
    address = web.client(request)
    token = form.get("token", "")
    claim = ADMIN if token else ACCOUNT_CLAIM
    services.throttle.check(address, claim)
    try:
        if token:
            if not services.access.is_admin(token):
                raise AuthError("wrong admin token")
            session = services.accounts.open(ADMIN, Role.OPERATOR)
        else:
            session = services.accounts.sign_in(form.get("name", ""), form.get("password", ""))
    except AuthError as exc:
        log.warning("dashboard sign-in failed from %s as %s: %s", address, claim, exc)
        services.throttle.failed(address, claim)
        raise
    services.throttle.succeeded(address, claim)
    log.info("dashboard sign-in from %s: account %s", address, session.account)
    return session


async def signin(request: Request) -> Response:
    form = await read_form(request)
    expected = request.cookies.get(PRESESSION, "")
    given = form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        return _form(request, "the sign-in form had expired: try again", 400)
    try:
        session = await run_in_threadpool(_open, request, form)
    except AuthError as exc:
        return _form(request, str(exc), 401)
    response = RedirectResponse(_next(request, form.get("next", "")), 303)
    set_cookie(response, request, COOKIE, session.cookie)
    response.delete_cookie(PRESESSION, path=request.scope.get("root_path", "") or "/")
    return response


async def signout(request: Request) -> Response:
    session = await run_in_threadpool(current, request)
    if session is not None:
        form = await read_form(request)
        session.check_csrf(form.get(CSRF_FIELD, ""))
        await run_in_threadpool(
            web_of(request).services.accounts.sign_out, request.cookies.get(COOKIE, "")
        )
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/signin", 303)
    response.delete_cookie(COOKIE, path=root or "/")
    return response


routes = [
    Route("/signin", signin_page, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
]

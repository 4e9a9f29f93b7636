"""Who is signed in, and the forms' checks.

- The session cookie (`COOKIE`): HttpOnly, SameSite=Lax, path `/ui`, Secure when the
  request came over HTTPS or the setting `ui_secure_cookie` says so; its value is the
  session's secret (`service/accounts.py` keeps only its hash).
- `signed_in`: the session of a request, or a redirect to the sign-in page (GET) / 401.
- `read_form`: an `application/x-www-form-urlencoded` body, with its form token checked
  against the session's (a synchronizer token: a form posted from elsewhere lacks it);
  `operator` refuses a support account (403).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from controparte.errors import AuthError, ForbiddenError, ValidationError
from controparte.service.accounts import Session
from controparte.web.pages import web_of

COOKIE = "controparte_session"
CSRF_FIELD = "csrf"
MAX_FORM = 65_536
"""Bytes of a form at most (the HTTP layer's body limit applies before)."""


class SignInNeededError(Exception):
    """No session: the page answers with the sign-in page's address (`location`)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def secure(request: HTTPConnection) -> bool:
    """Whether the dashboard's cookies are marked Secure for this request."""
    return request.url.scheme == "https" or web_of(request).services.settings.ui_secure_cookie


def set_cookie(response: Response, request: HTTPConnection, name: str, value: str) -> None:
    """Set cookie `name` for the dashboard's paths (HttpOnly, SameSite=Lax, Secure as
    `secure` says); a session cookie ends with the browser, the session itself expires
    in the store."""
    response.set_cookie(
        name,
        value,
        path=request.scope.get("root_path", "") or "/",
        httponly=True,
        samesite="lax",
        secure=secure(request),
    )


def current(request: HTTPConnection) -> Session | None:
    """The session of `request`, if it has an open one."""
    return web_of(request).services.accounts.session(request.cookies.get(COOKIE, ""))


def signed_in(request: HTTPConnection) -> Session:
    """The session of `request`; else SignInNeededError (back here after signing in)."""
    session = current(request)
    if session is None:
        root = request.scope.get("root_path", "")
        back = request.url.path
        raise SignInNeededError(f"{root}/signin?next={quote(back, safe='/')}")
    return session


def operator(session: Session) -> None:
    """Raise ForbiddenError unless `session` may change the registry."""
    if not session.may_change:
        raise ForbiddenError(
            f"account {session.account!r} is a support account: it may look, not change"
        )


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a posted form (the last of each name)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise ValidationError("form", "a form is posted as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM:
        raise ValidationError("form", f"a form has at most {MAX_FORM} bytes")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def checked_form(request: Request, *, change: bool = True) -> tuple[Session, dict[str, str]]:
    """The session and the form of a POST: its form token checked (AuthError when it is
    missing or not the session's); with `change`, an operator's only (ForbiddenError)."""
    session = await run_in_threadpool(current, request)
    if session is None:
        raise AuthError("not signed in, or the session has expired: sign in again")
    form = await read_form(request)
    session.check_csrf(form.get(CSRF_FIELD, ""))
    if change:
        operator(session)
    return session, form

"""Who may call what. Every credential check of the HTTP layer goes through `Gate`.

Rules:
- An installation token (Bearer; Basic password for DynDNS2) authorises only its own
  installation; an admin token (configured, or made by `controparte admin-token`)
  authorises management of every installation.
- Before any credential is looked at, a client blocked by the throttle is refused
  (`RateLimitedError`: HTTP 429, DynDNS2 `abuse`).
- A wrong or unknown credential is an `AuthError` (401). It is counted against the
  client's address by the throttle and in the metrics, and logged with the client
  address, the way and the reason, never with the credential itself.
- A missing credential is an `AuthError` too, but not counted (it guesses nothing).
- A valid installation token on an admin-only action for that same installation is a
  `ForbiddenError` (403), not a failure: the credential is right, the action is not
  allowed to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from controparte.errors import AuthError, ForbiddenError
from controparte.http.clientaddr import Client
from controparte.http.metrics import AUTH_BLOCKS, AUTH_FAILURES, Metrics
from controparte.model import Installation, label_of
from controparte.service.services import Services

log = logging.getLogger("controparte.http.auth")

BAD_CREDENTIALS = "bad credentials: unknown installation or wrong token"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an admin, or one installation (`code`)."""

    admin: bool
    code: str | None = None

    @property
    def actor(self) -> str:
        """The name the audit history records for changes by this caller."""
        return "admin" if self.admin or self.code is None else self.code


class Gate:
    """Credential checks with throttling, counting and logging (see the module)."""

    def __init__(self, services: Services, metrics: Metrics) -> None:
        self.services = services
        self.metrics = metrics

    # -- throttle, counting, logging ----------------------------------------------------

    def guard(self, client: Client) -> None:
        """Raise RateLimitedError while the client is blocked."""
        self.services.throttle.check(client.key)

    def failed(self, client: Client, way: str, reason: str, user: str | None = None) -> None:
        """Count and log one failed authentication (without the credential)."""
        self.metrics.inc(AUTH_FAILURES, way=way)
        who = "" if user is None else f" as {user[:64]!r}"
        log.warning("authentication failed via %s from %s%s: %s", way, client.key, who, reason)
        if self.services.throttle.failed(client.key):
            self.metrics.inc(AUTH_BLOCKS)
            log.warning("blocking %s after repeated authentication failures", client.key)

    def succeeded(self, client: Client) -> None:
        self.services.throttle.succeeded(client.key)

    # -- the checks -----------------------------------------------------------------------

    def admin(self, token: str | None, client: Client, *, code: str | None = None) -> Principal:
        """An admin token, or an error. With `code`, the valid token of that very
        installation is a ForbiddenError (not counted as a failure)."""
        self.guard(client)
        if not token:
            raise AuthError("missing credentials: send Authorization: Bearer <admin token>")
        access = self.services.access
        if access.is_admin(token):
            self.succeeded(client)
            return Principal(admin=True)
        if code is not None:
            try:
                inst = access.authenticate(code, token)
            except AuthError:
                pass
            else:
                if inst.code.lower() == code.lower():
                    raise ForbiddenError(
                        f"an installation token cannot do this to {inst.code!r}:"
                        " it needs an admin token"
                    )
        self.failed(client, "api", "not an admin token")
        raise AuthError("bad credentials: this needs an admin token")

    def installation(self, token: str | None, client: Client, code: str) -> Installation:
        """The installation `code`, when `token` is its own token."""
        return self.authenticated(self.present(token, client), client, code)

    def present(self, token: str | None, client: Client) -> str:
        """The first steps of `installation`: the throttle, then a token at all."""
        self.guard(client)
        if not token:
            raise AuthError("missing credentials: send Authorization: Bearer <token>")
        return token

    def authenticated(self, token: str, client: Client, code: str) -> Installation:
        """The rest of `installation`: the token checked against installation `code`
        (NotFoundError when `code` is its label: the path names codes)."""
        try:
            inst = self.services.access.authenticate_code(code, token)
        except AuthError:
            self.refused(client, code)
            raise
        self.succeeded(client)
        return inst

    def refused(self, client: Client, code: str) -> None:
        """Count and log a wrong token for installation `code` (see `failed`)."""
        self.failed(client, "api", f"wrong token for {code[:64]!r}")

    def admin_or_installation(self, token: str | None, client: Client, code: str) -> Principal:
        """An admin token, or the token of installation `code` itself."""
        self.guard(client)
        if not token:
            raise AuthError("missing credentials: send Authorization: Bearer <token>")
        if self.services.access.is_admin(token):
            self.succeeded(client)
            return Principal(admin=True)
        inst = self.installation(token, client, code)
        return Principal(admin=False, code=inst.code)

    def admin_or_either(self, token: str | None, client: Client, names: Sequence[str]) -> Principal:
        """An admin token, or the token of one of the installations `names` (codes,
        labels or `<label>.<zone>`: the ends of a plan). An unknown name is a
        NotFoundError (what `/v1/resolve` tells anyone); a token of neither is an
        AuthError, counted."""
        self.guard(client)
        if not token:
            raise AuthError("missing credentials: send Authorization: Bearer <token>")
        access = self.services.access
        if access.is_admin(token):
            self.succeeded(client)
            return Principal(admin=True)
        for name in names:
            code = self.services.registry.find(name).code
            try:
                inst = access.authenticate(code, token)
            except AuthError:
                continue
            self.succeeded(client)
            return Principal(admin=False, code=inst.code)
        self.failed(client, "api", "the token of neither installation")
        raise AuthError(
            "bad credentials: this needs an admin token or the token of one of the"
            " two installations"
        )

    def account(self, username: str, password: str, client: Client) -> Installation:
        """The DynDNS2 account: username = code, label or `<label>.<zone>`, password =
        the installation's token. Raises AuthError (counted) when they do not match."""
        self.guard(client)
        name = label_of(username, self.services.settings.zone) or username.strip().rstrip(".")
        try:
            inst = self.services.access.authenticate(name, password) if name else None
        except AuthError:
            inst = None
        if inst is None:
            self.failed(client, "dyndns2", "wrong username or password", user=username)
            raise AuthError(BAD_CREDENTIALS)
        self.succeeded(client)
        return inst

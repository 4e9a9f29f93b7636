"""Who may call what. Every credential check of the HTTP layer goes through `Gate`.

Rules:
- An installation token (Bearer; Basic password for DynDNS2) authorises only its own
  installation; an admin token (configured, or made by `controparte admin-token`)
  authorises management of every installation.
- Before any credential is looked at, a client blocked by the throttle is refused
  (`RateLimitedError`: HTTP 429, DynDNS2 `abuse`): its whole address, or the claim it
  makes from that address (the installation the path or the DynDNS2 username names,
  `(admin)` for an admin-only action, `(unknown)` when the name is no installation's
  or a plan's token is of neither end).
- A wrong or unknown credential is an `AuthError` (401). It is counted by the throttle
  against the client's address and claim, and in the metrics, and logged with the
  client address, the way, the claim and the reason, never with the credential itself
  nor a DynDNS2 username as presented (it may be a token in the wrong field).
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
from controparte.model.installation import CODE_RE
from controparte.service.services import Services
from controparte.service.throttle import ADDRESS, ADMIN, UNKNOWN

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

    def guard(self, client: Client, claim: str | None = None) -> None:
        """Raise RateLimitedError while the client's address, or `claim` from it, is
        blocked."""
        self.services.throttle.check(client.key, claim)

    def failed(self, client: Client, way: str, reason: str, claim: str) -> None:
        """Count and log one failed authentication claiming `claim` (an installation's
        code, `ADMIN` or `UNKNOWN`: never what the client presented as a name)."""
        self.metrics.inc(AUTH_FAILURES, way=way)
        log.warning(
            "authentication failed via %s from %s as %s: %s", way, client.key, claim, reason
        )
        for which in self.services.throttle.failed(client.key, claim):
            self.metrics.inc(AUTH_BLOCKS)
            what = "every claim" if which == ADDRESS else which
            log.warning("blocking %s (%s) after repeated authentication failures", client.key, what)

    def succeeded(self, client: Client, claim: str) -> None:
        self.services.throttle.succeeded(client.key, claim)

    # -- the checks -----------------------------------------------------------------------

    def admin(self, token: str | None, client: Client, *, code: str | None = None) -> Principal:
        """An admin token, or an error. With `code`, the valid token of that very
        installation is a ForbiddenError (not counted as a failure)."""
        self.guard(client, ADMIN)
        if not token:
            raise AuthError("missing credentials: send Authorization: Bearer <admin token>")
        access = self.services.access
        if access.is_admin(token):
            self.succeeded(client, ADMIN)
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
        self.failed(client, "api", "not an admin token", ADMIN)
        raise AuthError("bad credentials: this needs an admin token")

    def installation(self, token: str | None, client: Client, code: str) -> Installation:
        """The installation `code`, when `token` is its own token."""
        return self.authenticated(self.present(token, client, code), client, code)

    def present(self, token: str | None, client: Client, code: str) -> str:
        """The first steps of `installation`: the throttle (the address, and the claim
        of installation `code`), then a token at all."""
        self.guard(client, claim_of(code))
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
        self.succeeded(client, claim_of(code))
        return inst

    def refused(self, client: Client, code: str) -> None:
        """Count and log a wrong token for installation `code` (see `failed`)."""
        self.failed(client, "api", "wrong token", claim_of(code))

    def admin_or_installation(self, token: str | None, client: Client, code: str) -> Principal:
        """An admin token, or the token of installation `code` itself; the claim is
        installation `code`'s (a wrong token is counted against it)."""
        self.guard(client, claim_of(code))
        if not token:
            raise AuthError("missing credentials: send Authorization: Bearer <token>")
        if self.services.access.is_admin(token):
            return Principal(admin=True)
        inst = self.installation(token, client, code)
        return Principal(admin=False, code=inst.code)

    def admin_or_either(self, token: str | None, client: Client, names: Sequence[str]) -> Principal:
        """An admin token, or the token of one of the installations `names` (codes,
        labels or `<label>.<zone>`: the ends of a plan). An unknown name is a
        NotFoundError (what `/v1/resolve` tells anyone); a token of neither is an
        AuthError, counted against the claim `UNKNOWN` (it claims neither)."""
        self.guard(client, UNKNOWN)
        if not token:
            raise AuthError("missing credentials: send Authorization: Bearer <token>")
        access = self.services.access
        if access.is_admin(token):
            return Principal(admin=True)
        for name in names:
            code = self.services.registry.find(name).code
            try:
                inst = access.authenticate(code, token)
            except AuthError:
                continue
            return Principal(admin=False, code=inst.code)
        self.failed(client, "api", "the token of neither installation", UNKNOWN)
        raise AuthError(
            "bad credentials: this needs an admin token or the token of one of the"
            " two installations"
        )

    def account(self, username: str, password: str, client: Client) -> Installation:
        """The DynDNS2 account: username = code, label or `<label>.<zone>`, password =
        the installation's token. Raises AuthError (counted against the installation
        the username names, or `UNKNOWN`) when they do not match; the username as
        presented is never logged nor kept (swapped fields put the token there)."""
        self.guard(client)
        access = self.services.access
        name = label_of(username, self.services.settings.zone) or username.strip().rstrip(".")
        named = access.named(name) if name else None
        claim = UNKNOWN if named is None else claim_of(named.code)
        self.guard(client, claim)
        try:
            inst = access.authenticate(named.code, password) if named is not None else None
        except AuthError:
            inst = None
        if inst is None:
            self.failed(client, "dyndns2", "wrong username or password", claim)
            raise AuthError(BAD_CREDENTIALS)
        self.succeeded(client, claim)
        return inst


def claim_of(code: str) -> str:
    """The throttle's claim for installation `code` as a request names it: the code in
    lower case (codes are the same in any case); `UNKNOWN` for what is no code."""
    return code.lower() if CODE_RE.fullmatch(code) else UNKNOWN

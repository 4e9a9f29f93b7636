"""One exception tree for the whole service, and one table that maps each error
to what every front end answers (HTTP status, DNS rcode, DynDNS2 code, CLI exit code).

Front ends never improvise: they catch `ControparteError` and look up `response_for`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class ControparteError(Exception):
    """Base of every error the service raises on purpose. The message stands alone."""


class ValidationError(ControparteError):
    """A value broke a rule of the model; the message names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class ImportRefusedError(ControparteError):
    """A bulk import that was refused whole; `problems` are (line, message) pairs, the
    message names the line of every problem.

    A plain class, not a frozen dataclass: `contextlib` sets `__traceback__` on an
    exception leaving a `with` block, which a frozen (slotted) dataclass refuses."""

    def __init__(self, problems: Iterable[tuple[int, str]]) -> None:
        self.problems: tuple[tuple[int, str], ...] = tuple(problems)
        super().__init__("; ".join(f"line {line}: {msg}" for line, msg in self.problems))


class NotFoundError(ControparteError):
    """The named object does not exist."""


class ConflictError(ControparteError):
    """The change collides with existing data (a duplicate code or label)."""


class ConfigError(ControparteError):
    """A setting is missing or malformed; the message names the key."""


class StorageError(ControparteError):
    """The store could not complete the operation (the change was not made)."""


class AuthError(ControparteError):
    """The credential is missing, unknown or wrong."""


class ForbiddenError(ControparteError):
    """The credential is valid but does not cover this installation or action."""


class RateLimitedError(ControparteError):
    """Too many requests (or failed attempts) from this client: slow down.
    `retry_after`: whole seconds until a retry may succeed, when the raiser knows."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """How each front end reports one kind of error."""

    http_status: int
    dns_rcode: int  # dns.rcode value
    dyndns2: str
    exit_code: int


# dns.rcode: FORMERR=1, SERVFAIL=2, NXDOMAIN=3, REFUSED=5, YXDOMAIN=6, NXRRSET=8
_RESPONSES: dict[type[ControparteError], ErrorResponse] = {
    ValidationError: ErrorResponse(422, 5, "notfqdn", 1),  # a policy refusal, not FORMERR
    ImportRefusedError: ErrorResponse(422, 5, "dnserr", 1),
    NotFoundError: ErrorResponse(404, 3, "nohost", 1),
    ConflictError: ErrorResponse(409, 6, "dnserr", 1),
    ConfigError: ErrorResponse(500, 2, "911", 2),
    StorageError: ErrorResponse(503, 2, "911", 1),
    AuthError: ErrorResponse(401, 9, "badauth", 1),  # NOTAUTH
    ForbiddenError: ErrorResponse(403, 5, "nohost", 1),  # REFUSED
    RateLimitedError: ErrorResponse(429, 5, "abuse", 1),
    ControparteError: ErrorResponse(500, 2, "911", 1),
}


def response_for(error: ControparteError) -> ErrorResponse:
    """The response row for `error`: the most specific class in the table wins."""
    for cls in type(error).__mro__:
        if cls in _RESPONSES:
            return _RESPONSES[cls]
    return _RESPONSES[ControparteError]

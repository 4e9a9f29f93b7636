"""One exception tree for the whole service, and one table that maps each error
to what every front end answers (HTTP status, DNS rcode, DynDNS2 code, CLI exit code).

Front ends never improvise: they catch `ControparteError` and look up `response_for`.
The table also covers requests refused before the service sees a value (`MalformedError`:
cannot be read; `InvalidRequestError`: not the documented shape; `UnsupportedError`:
not something the service offers), so the HTTP layer's own refusals (an unknown
route, a wrong method, a body that is not JSON) come from rows of the table as well.
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


class BadAddressError(ControparteError):
    """An address given to be published (a DynDNS2 `myip`, or the client address
    itself) is malformed, of the wrong family, or may not be published. `value` is the
    address as given, `reason` what is wrong with it."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(f"{value!r}: {reason}")
        self.value = value


class ImportRefusedError(ControparteError):
    """A bulk import that was refused whole; `problems` are (line, message) pairs, the
    message names the line of every problem.

    A plain class, not a frozen dataclass: `contextlib` sets `__traceback__` on an
    exception leaving a `with` block, which a frozen (slotted) dataclass refuses."""

    def __init__(self, problems: Iterable[tuple[int, str]]) -> None:
        self.problems: tuple[tuple[int, str], ...] = tuple(problems)
        super().__init__("; ".join(f"line {line}: {msg}" for line, msg in self.problems))


class InvalidRequestError(ControparteError):
    """A request without the shape its protocol documents (an HTTP parameter or body
    field missing, of the wrong type or out of range: the schema's checks, before the
    service sees a value). `problems` are (location, message) pairs, the location
    dotted (`body.port`, `query.limit`); the message names every one."""

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {msg}" for where, msg in problems))


class MalformedError(ControparteError):
    """A request that cannot be read at all (a DNS message that does not follow the
    wire format, an HTTP body that is not JSON or not text), as opposed to one that
    reads but breaks a rule (`ValidationError`, `InvalidRequestError`)."""


class UnsupportedError(ControparteError):
    """The request asks for something the service does not offer: a path it does not
    serve (told apart from a NotFoundError, which is about an object, so that a client
    can tell an older server without a route from a missing installation)."""


class MethodNotAllowedError(UnsupportedError):
    """A method the path does not take; `allow`: the methods it does take."""

    def __init__(self, message: str, allow: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.allow = tuple(allow)


class TooLargeError(MalformedError):
    """A request larger than the service reads: its body (`http_max_body`), refused
    before a byte of it is read past the limit."""


class HeadersTooLargeError(TooLargeError):
    """A request head (request line and header fields) longer than `http_max_header_bytes`
    or with more fields than `http_max_headers`."""


class RequestTimeoutError(MalformedError):
    """A request whose head or body did not arrive in time (`http_header_timeout`,
    `http_body_timeout`): the connection is closed."""


class NotFoundError(ControparteError):
    """The named object does not exist."""


class ConflictError(ControparteError):
    """The change collides with existing data (a duplicate code or label)."""


class PortTakenError(ConflictError):
    """The store refused a Live installation's (gateway, port): another writer (a
    process, a node) took it after this one read the pool. Retrying the whole
    placement reads the pool again and picks another."""


class PoolExhaustedError(ControparteError):
    """No free (gateway, port) is left for a Live installation on the gateway(s) named:
    every port is held or in quarantine, or the gateway is at its capacity. The request
    is sound and succeeds once a port is freed (a quarantine ends, an installation is
    removed) or the operator adds a gateway or ports."""


class ConfigError(ControparteError):
    """A setting is missing or malformed; the message names the key."""


class StorageError(ControparteError):
    """The store could not complete the operation (the change was not made)."""


class StorageUnavailableError(StorageError):
    """The database cannot be reached or answered too late (down, restarting, a lock
    held too long, a conflict with a concurrent writer): nothing was changed, and the
    same request may succeed when retried a little later. When the connection broke
    during a commit, the change may in fact have been made: every write that can be
    retried (a heartbeat, a DynDNS2 or RFC 2136 update) is idempotent."""


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


# dns.rcode: FORMERR=1, SERVFAIL=2, NXDOMAIN=3, NOTIMP=4, REFUSED=5, YXDOMAIN=6,
# NOTAUTH=9. DynDNS2 codes: `http/dyndns2.py`. A ValidationError at the DynDNS2 front
# end comes from a registry rule refusing the write of a request whose hostname and
# addresses were already checked: `dnserr`, not `notfqdn` (which would blame the name).
_RESPONSES: dict[type[ControparteError], ErrorResponse] = {
    ValidationError: ErrorResponse(422, 5, "dnserr", 1),  # a policy refusal, not FORMERR
    BadAddressError: ErrorResponse(400, 5, "badip", 1),
    ImportRefusedError: ErrorResponse(422, 5, "dnserr", 1),
    InvalidRequestError: ErrorResponse(422, 1, "badagent", 1),
    MalformedError: ErrorResponse(400, 1, "badagent", 1),
    TooLargeError: ErrorResponse(413, 1, "badagent", 1),
    HeadersTooLargeError: ErrorResponse(431, 1, "badagent", 1),
    RequestTimeoutError: ErrorResponse(408, 1, "badagent", 1),
    UnsupportedError: ErrorResponse(404, 4, "badagent", 1),  # NOTIMP
    MethodNotAllowedError: ErrorResponse(405, 4, "badagent", 1),
    NotFoundError: ErrorResponse(404, 3, "nohost", 1),
    ConflictError: ErrorResponse(409, 6, "dnserr", 1),
    PoolExhaustedError: ErrorResponse(503, 2, "911", 1),  # no capacity now, not a conflict
    ConfigError: ErrorResponse(500, 2, "911", 2),
    StorageError: ErrorResponse(503, 2, "911", 1),
    StorageUnavailableError: ErrorResponse(503, 2, "911", 1),  # retry later
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

"""JSON answers as bytes, shared by the FastAPI routes and the pure-ASGI fast path, so
both write the same bytes and headers for the same case.

Every error answer has one shape, `{"error": <kind>, "detail": <message that stands
alone>}`, and is counted by kind:
- `error_reply`: a `ControparteError` with the HTTP status of `errors.response_for`
  and its kind (the class name), a Bearer challenge on 401, a Retry-After on 429 (the
  error's own `retry_after`, else the failed-authentication block) and on 503 when the
  database is unavailable (`RETRY_UNAVAILABLE`), an Allow on 405.
  The HTTP layer's own refusals become errors of the tree first: `invalid_request`
  (pydantic's validation errors: 422 `InvalidRequestError`, each problem named by its
  location, e.g. `body.port: Input should be a valid integer`; 400 `MalformedError`
  for a body that is not JSON), `not_json` and `UNREADABLE_BODY` (400
  `MalformedError`), `http_refusal` (404 `UnsupportedError`, 405
  `MethodNotAllowedError`), `unreadable` (400 `MalformedError` for a body JSON cannot
  read: not text, nested too deeply, an integer too long).
- `internal_reply`: 500 `{"error": "internal", ...}` without details.
- `Reply.response()` and `Reply.raw_headers()` give the same header list as Starlette's
  `JSONResponse`: the extra headers, then content-length, then content-type.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from controparte.errors import (
    AuthError,
    ControparteError,
    InvalidRequestError,
    MalformedError,
    MethodNotAllowedError,
    RateLimitedError,
    StorageUnavailableError,
    UnsupportedError,
    response_for,
)
from controparte.http.metrics import ERRORS, Metrics

JSON = "application/json"
BEARER_CHALLENGE = 'Bearer realm="controparte"'
UNREADABLE_BODY = "body: not text (UTF-8, UTF-16 or UTF-32), so not JSON"
RETRY_UNAVAILABLE = 5
"""The Retry-After (seconds) of a StorageUnavailableError: about what a database restart
takes; the connections come back by themselves."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer with a JSON body: status, body bytes and the headers besides
    content-length and content-type."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The ASGI header list, in Starlette's order."""
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        return [
            *extra,
            (b"content-length", str(len(self.body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]

    def response(self) -> Response:
        return Response(self.body, self.status, headers=dict(self.headers), media_type=JSON)


def render(content: Any) -> bytes:
    """JSON as Starlette's `JSONResponse` renders it (compact, UTF-8)."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def error_reply(exc: ControparteError, metrics: Metrics, block: float) -> Reply:
    """The answer to an error the service raised on purpose; `block` is the throttle's
    block time, the Retry-After of a RateLimitedError that names none."""
    metrics.inc(ERRORS, kind=type(exc).__name__)
    headers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, AuthError):
        headers = (("WWW-Authenticate", BEARER_CHALLENGE),)
    elif isinstance(exc, RateLimitedError):
        retry_after = int(block) if exc.retry_after is None else exc.retry_after
        headers = (("Retry-After", str(retry_after)),)
    elif isinstance(exc, MethodNotAllowedError) and exc.allow:
        headers = (("Allow", ", ".join(exc.allow)),)
    elif isinstance(exc, StorageUnavailableError):
        headers = (("Retry-After", str(RETRY_UNAVAILABLE)),)
    body = render({"error": type(exc).__name__, "detail": str(exc)})
    return Reply(response_for(exc).http_status, body, headers)


def internal_reply(metrics: Metrics) -> Reply:
    """500 without details, for an unexpected exception (counted as `internal`)."""
    metrics.inc(ERRORS, kind="internal")
    return Reply(500, render({"error": "internal", "detail": "internal server error"}))


def not_json(message: str, position: int) -> MalformedError:
    """A body that does not parse as JSON: `message` and `position` are the decoder's."""
    return MalformedError(f"body: not valid JSON: {message} (at character {position})")


def _location(loc: Iterable[str | int]) -> str:
    """pydantic's `loc` as one word: `body.port`, `body.features[0]`, `query.limit`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def invalid_request(errors: Iterable[Mapping[str, Any]]) -> ControparteError:
    """pydantic's validation errors of a request (each `loc` starting with where:
    body, query, path, header) as the error to answer: a body that is not JSON at all
    is a MalformedError (400), anything else an InvalidRequestError (422) naming every
    problem with its location."""
    found = list(errors)
    for error in found:
        if error["type"] == "json_invalid":
            return not_json(str(error.get("ctx", {}).get("error", "")), int(error["loc"][-1]))
    return InvalidRequestError((_location(e["loc"]), str(e["msg"])) for e in found)


def unreadable(exc: BaseException | None) -> MalformedError:
    """A body that JSON could not read, by what reading it raised: not text
    (`UNREADABLE_BODY`), nested deeper than the decoder goes, or a value it refuses
    (an integer of more digits than Python converts)."""
    if isinstance(exc, RecursionError):
        return MalformedError("body: JSON nested too deeply")
    if isinstance(exc, ValueError) and not isinstance(exc, UnicodeError):
        return MalformedError(f"body: not valid JSON: {exc}")
    return MalformedError(UNREADABLE_BODY)


def http_refusal(
    status: int, method: str, path: str, allow: str | None, cause: BaseException | None = None
) -> ControparteError:
    """Starlette's and FastAPI's own refusals (`HTTPException`) as errors of the tree:
    404 (no such path) an UnsupportedError, 405 (a method the path does not take;
    `allow`: its Allow header) a MethodNotAllowedError; the only other one they raise
    here, 400 (a body FastAPI cannot read, `cause` what reading it raised), a
    MalformedError (`unreadable`)."""
    shown = path[:200]
    if status == 404:
        return UnsupportedError(f"no such path: {shown} (the API is described at /openapi.json)")
    if status == 405:
        methods = [m.strip() for m in (allow or "").split(",") if m.strip()]
        return MethodNotAllowedError(f"{method} is not allowed on {shown}", allow=methods)
    return unreadable(cause)

"""JSON answers as bytes, shared by the FastAPI routes and the pure-ASGI fast path, so
both write the same bytes and headers for the same case.

- `error_reply`: a `ControparteError` as `{"error": <kind>, "detail": <message>}` with
  the HTTP status of `errors.response_for`, a Bearer challenge on 401 and a Retry-After
  on 429 (the error's own `retry_after`, else the failed-authentication block); counted
  by kind.
- `validation_reply`: request validation errors as FastAPI writes them (422,
  `{"detail": [...]}`), counted as `RequestValidationError`; a value JSON cannot hold
  (an infinite number, bytes that are not UTF-8) is written as null or with U+FFFD
  instead of failing.
- `Reply.response()` and `Reply.raw_headers()` give the same header list as Starlette's
  `JSONResponse`: the extra headers, then content-length, then content-type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.encoders import jsonable_encoder
from starlette.responses import Response

from controparte.errors import AuthError, ControparteError, RateLimitedError, response_for
from controparte.http.metrics import ERRORS, Metrics

JSON = "application/json"
BEARER_CHALLENGE = 'Bearer realm="controparte"'
BAD_BODY = "There was an error parsing the body"


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
    body = render({"error": type(exc).__name__, "detail": str(exc)})
    return Reply(response_for(exc).http_status, body, headers)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def validation_reply(errors: Sequence[Any], metrics: Metrics) -> Reply:
    """422 with the validation errors (pydantic's, `loc` starting with where)."""
    metrics.inc(ERRORS, kind="RequestValidationError")
    encoded = jsonable_encoder(
        list(errors), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")}
    )
    return Reply(422, render({"detail": _finite(encoded)}))


def internal_reply(metrics: Metrics) -> Reply:
    """500 without details, for an unexpected exception (counted as `internal`)."""
    metrics.inc(ERRORS, kind="internal")
    return Reply(500, render({"error": "internal", "detail": "internal server error"}))


def bad_body_reply() -> Reply:
    """400: a body that is not text at all (FastAPI's answer; not counted as an error)."""
    return Reply(400, render({"detail": BAD_BODY}))

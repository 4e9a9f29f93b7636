"""`POST /v1/installations/{code}/heartbeat`: one implementation, two shells.

`beat` is the whole route: from (context, code, the Authorization and Content-Type
headers, the body bytes, the client) to a `Reply`. In order:

1. credentials, by `Gate`'s rules: the throttle (429), a Bearer token at all (401),
   then the token's HMAC check (401, counted and logged without the token; 404 when
   the path names the installation by its label);
2. the body, by FastAPI's rules for a JSON body of model `HeartbeatIn` (JSON only when
   the content type says so), refused as every other route's is (`replies.py`: 422 for
   the wrong shape, 400 for bytes that are not JSON text);
3. the client's address (a trusted proxy that forwarded garbage: 422 `Forwarded`);
4. the beat, handed to the group-committing writer and awaited on the event loop (no
   thread-pool hop; the writer settles a whole batch with one call into the loop, and
   its result carries the zone serial);
5. the answer, `HeartbeatOut` as JSON.

The token check of step 1 runs in the writer, in the beat's own transaction, when the
body and the address are good (the common case): the event loop then does no store
read at all, and never contends with the writer thread for the GIL over SQLite calls.
Otherwise it runs on the loop first, so a wrong token is still answered before a bad
body. Either way the answer is the same.

The shells: `HeartbeatShell`, a pure-ASGI app in front of FastAPI that answers this one
path and passes everything else on (what the service runs), and the FastAPI route in
`v1.py`, which calls `beat` too and is what the OpenAPI document describes. An
unexpected exception is logged, counted and answered 500 by either, as by FastAPI.
"""

from __future__ import annotations

import asyncio
import email.message
import json
import logging
from dataclasses import dataclass
from typing import Any

import pydantic
from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import ASGIApp, Receive, Scope, Send

from controparte.errors import (
    AuthError,
    ControparteError,
    NotFoundError,
    StorageError,
    ValidationError,
)
from controparte.http.auth import claim_of
from controparte.http.clientaddr import Client, resolve_client
from controparte.http.context import Context
from controparte.http.metrics import HEARTBEATS
from controparte.http.replies import (
    Reply,
    error_reply,
    internal_reply,
    invalid_request,
    not_json,
    render,
    unreadable,
)
from controparte.http.schemas import HeartbeatIn
from controparte.service.heartbeat import Beat

log = logging.getLogger("controparte.http")

PATH = "/v1/installations/{code}/heartbeat"
_PREFIX = "/v1/installations/"
_SUFFIX = "/heartbeat"
_HEARTBEAT_IN = pydantic.TypeAdapter(HeartbeatIn)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, as FastAPI's HTTPBearer
    reads it; None when there is none."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule: application/json or application/*+json, parameters allowed; no
    content type at all is not JSON."""
    if not content_type:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def read_body(body: bytes, content_type: str | None) -> HeartbeatIn:
    """The heartbeat in `body`, by FastAPI's rules; else the error FastAPI's would be
    answered with (`replies.invalid_request`: InvalidRequestError, MalformedError)."""
    value: Any
    if not body:
        raise invalid_request([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    if _is_json(content_type):
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            raise not_json(exc.msg, exc.pos) from None
        except (ValueError, RecursionError) as exc:  # not text, too deep, too long a number
            raise unreadable(exc) from None
    else:
        value = body
    try:
        return _HEARTBEAT_IN.validate_python(value, from_attributes=True)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise invalid_request({**e, "loc": ("body", *e["loc"])} for e in errors) from None


async def beat(
    ctx: Context,
    code: str,
    *,
    authorization: str | None,
    content_type: str | None,
    body: bytes,
    client: Client,
) -> Reply:
    """The answer to one heartbeat request (see the module). Errors the service raises
    on purpose become their replies; anything else propagates (a 500)."""
    services = ctx.services
    gate = ctx.gate
    try:
        token = gate.present(bearer_token(authorization), client, code)
        try:
            sent = read_body(body, content_type)
        except ControparteError:
            gate.authenticated(token, client, code)  # a wrong token is told first
            raise
        address = client.address
        if address is None:
            gate.authenticated(token, client, code)
            raise ValidationError(
                "Forwarded",
                f"a trusted proxy forwarded {client.bad_hop!r}, which is not an IP address",
            )
        # The common case: the writer checks the token in the beat's own transaction
        # (no store read here, on the event loop); the outcome is accounted as
        # `Gate.authenticated` would.
        try:
            result = await services.heartbeats.beat(
                Beat(code, address, sent.port, sent.private_port, sent.version, token=token)
            )
        except AuthError:
            await asyncio.to_thread(gate.refused, client, code)  # a store write
            raise
        except NotFoundError:  # the token matched, but `code` is the installation's label
            raise
        except StorageError:  # the token may not even have been read: not the client's doing
            ctx.metrics.inc(HEARTBEATS, result="rejected")
            raise
        except ControparteError:  # authenticated, then refused
            gate.succeeded(client, claim_of(code))
            ctx.metrics.inc(HEARTBEATS, result="rejected")
            raise
        gate.succeeded(client, claim_of(code))
    except ControparteError as exc:
        return error_reply(exc, ctx.metrics, services.throttle.block)
    ctx.metrics.inc(HEARTBEATS, result="changed" if result.changed else "unchanged")
    now = result.installation
    settings = services.settings
    v6 = ":" in address  # `resolve_client` gives the canonical text of an address
    return Reply(
        200,
        render(
            {
                "code": now.code,
                "label": now.label,
                "fqdn": f"{now.label}.{settings.zone}",
                "ip": None if v6 else address,
                "ipv6": address if v6 else None,
                "port": now.port,
                "changed": result.changed,
                "serial": result.serial,
                "stale_after": float(settings.stale_after),
                "heartbeat_interval": float(settings.heartbeat_interval),
            }
        ),
    )


@dataclass(frozen=True, slots=True)
class RouteName:
    """What the request metrics read from `scope["route"]`: the route template."""

    path: str


class HeartbeatShell:
    """ASGI: answers `POST /v1/installations/{code}/heartbeat` with `beat` and passes
    every other request to `app`. It sets `scope["route"]` so the request metrics count
    it under the route template, as FastAPI's router would."""

    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx
        self.route = RouteName(PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: C901 - hot path: one function on purpose, see docs/PERFORMANCE.md
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        code = path[len(_PREFIX) : -len(_SUFFIX)]
        if not path.startswith(_PREFIX) or not path.endswith(_SUFFIX) or not code or "/" in code:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        authorization = content_type = None
        forwarded: list[str] = []
        x_forwarded_for: list[str] = []
        for raw_name, raw_value in scope["headers"]:
            if raw_name == b"authorization":
                if authorization is None:
                    authorization = raw_value.decode("latin-1")
            elif raw_name == b"content-type":
                if content_type is None:
                    content_type = raw_value.decode("latin-1")
            elif raw_name == b"forwarded":
                forwarded.append(raw_value.decode("latin-1"))
            elif raw_name == b"x-forwarded-for":
                x_forwarded_for.append(raw_value.decode("latin-1"))
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            body += message.get("body", b"")
            more = message.get("more_body", False)
        peer = scope.get("client")
        client = resolve_client(
            None if peer is None else peer[0], forwarded, x_forwarded_for, self.ctx.trusted
        )
        try:
            reply = await beat(
                self.ctx,
                code,
                authorization=authorization,
                content_type=content_type,
                body=body,
                client=client,
            )
        except Exception as exc:  # as FastAPI's server-error middleware does
            log.error("internal error on POST %s", path, exc_info=exc)
            await _send(send, internal_reply(self.ctx.metrics))
            raise
        await _send(send, reply)


async def _send(send: Send, reply: Reply) -> None:
    await send(
        {"type": "http.response.start", "status": reply.status, "headers": reply.raw_headers()}
    )
    await send({"type": "http.response.body", "body": reply.body})

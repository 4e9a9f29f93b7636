"""The request body size limit (`http_max_body`), as pure ASGI in front of every route.

A request whose Content-Length is above the limit is answered 413 (`TooLargeError`,
the service's error body, `connection: close`) before any route runs, so before
authentication, and without a byte of its body read: the server closes the
connection once the answer is out. A body of unknown length (chunked) is read here, up
to the limit, before the route runs: one byte more and it is answered 413 the same
way; within the limit, the route gets it whole. A body with a Content-Length within the
limit passes untouched (the server delivers no more than that length).

Starlette's `RequestBodyLimitMiddleware` answers in plain text and only once a route
reads past the limit; this one answers the service's error body, and before any route.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controparte.errors import TooLargeError
from controparte.http.metrics import Metrics
from controparte.http.replies import error_reply


class BodyLimit:
    """ASGI: at most `limit` bytes of request body reach `app` (see the module)."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked:
            if length is not None and length.strip().isdigit() and int(length) > self.limit:
                await self._refuse(send, f"Content-Length {int(length)} is above the limit")
                return
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left: nobody to answer
            part: bytes = message.get("body", b"")
            size += len(part)
            if size > self.limit:
                await self._refuse(send, "more than the limit")
                return
            parts.append(part)
            more = message.get("more_body", False)
        await self.app(scope, _replay(b"".join(parts), receive), send)

    async def _refuse(self, send: Send, size: str) -> None:
        """413: the body is `size` (of `limit` bytes)."""
        error = TooLargeError(f"body: {size} of {self.limit} bytes")
        reply = error_reply(error, self.metrics, 0)
        headers = [*reply.raw_headers(), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` whole first, then what `receive` gives."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay

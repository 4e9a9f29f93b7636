"""The HTTP connection shell: uvicorn's httptools protocol with the limits and timeouts
a server facing the internet needs, which uvicorn does not apply by itself.

Per connection (`GuardedProtocol`):
- a request head (request line and header fields) must arrive whole within
  `header_timeout` seconds of its first byte (of the connect, on a new connection): a
  connection that never sent a byte is closed silently, a partial head answered 408;
  between requests, uvicorn's keep-alive timeout (`http_keepalive_timeout`) closes an
  idle connection;
- a request body must arrive whole within `body_timeout` seconds of the end of its
  head: 408 (the route waiting for it sees the client gone);
- a head longer than `max_header_bytes`, or with more than `max_headers` fields, is
  answered 431 as soon as the limit is passed, without reading further;
- bytes that are not an HTTP/1.1 request are answered 400.
Every such answer is the service's error body (`replies.error_reply`, counted by kind)
with `connection: close`, and the connection is closed. The body size limit is the
app's (`bodylimit.py`): it answers before any route, so before authentication.

A connection closed in the middle of a request (an answer before the whole body, as a
413 is) lingers, as nginx's does: the answer goes out with a FIN after it, and what
the client still sends is read and dropped for up to `LINGER_SECONDS` or
`LINGER_BYTES`, whichever comes first, before the socket closes. Closed at once, the
socket would answer the client's next bytes with a reset, and a client still sending
would lose the answer it had not read yet.

Per server (`Slots`): at most `max_connections` connections. At the cap a new
connection takes the place of the one idle longest (no request in progress: silent,
between keep-alive requests, or still sending its head): an attacker's silent
connections make room for real clients instead of shutting them out. When every
connection is busy with a request, the new one is closed at once. Each early close is
counted by reason (`controparte_http_connections_closed_total`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from controparte.errors import (
    ControparteError,
    HeadersTooLargeError,
    MalformedError,
    RequestTimeoutError,
)
from controparte.http.metrics import CONNECTIONS_CLOSED, Metrics
from controparte.http.replies import error_reply
from controparte.settings import Settings

LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 2**20
RESERVED_FILES = 64
"""File descriptors an HTTP process keeps for everything but HTTP connections (the
database, logs, the listening sockets)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one HTTP server's connections (see the module)."""

    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def of(cls, settings: Settings, max_connections: int) -> Limits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            max_connections=max_connections,
        )


def connection_cap(wanted: int, open_files: int, beside: int) -> int:
    """The connections an HTTP process may hold: `wanted` (`http_max_connections`), at
    most what its file descriptor limit `open_files` leaves after `RESERVED_FILES` and
    the connections of `beside` (DNS over TCP in the same process, its
    `tcp_max_connections`; at most half of what is left), so that a full house evicts
    idle connections instead of failing to accept; at least 1."""
    budget = open_files - RESERVED_FILES
    return max(1, min(wanted, budget - min(beside, budget // 2)))


class Slots:
    """The connections of one server: how many, and the idle ones in the order they
    became idle (see the module). Used from the event loop only."""

    def __init__(self, cap: int, metrics: Metrics) -> None:
        self.cap = cap
        self.metrics = metrics
        self.members: set[GuardedProtocol] = set()
        self.idle: OrderedDict[GuardedProtocol, None] = OrderedDict()

    def admit(self, conn: GuardedProtocol) -> bool:
        """Take `conn` in (idle), closing the connection idle longest when the house is
        full; False when every connection is busy (then `conn` is not taken)."""
        if len(self.members) >= self.cap:
            if not self.idle:
                self.metrics.inc(CONNECTIONS_CLOSED, reason="full")
                return False
            oldest, _ = self.idle.popitem(last=False)
            self.members.discard(oldest)
            self.metrics.inc(CONNECTIONS_CLOSED, reason="evicted")
            oldest.close_now()
        self.members.add(conn)
        self.idle[conn] = None
        return True

    def busy(self, conn: GuardedProtocol) -> None:
        self.idle.pop(conn, None)

    def rest(self, conn: GuardedProtocol) -> None:
        if conn in self.members:
            self.idle[conn] = None
            self.idle.move_to_end(conn)

    def gone(self, conn: GuardedProtocol) -> None:
        self.members.discard(conn)
        self.idle.pop(conn, None)


class _Refused(Exception):  # noqa: N818 - a signal out of a parser callback, not an error
    """Raised in a parser callback to stop parsing and answer `error`."""

    def __init__(self, error: ControparteError) -> None:
        super().__init__(str(error))
        self.error = error


class _LingeringTransport:
    """A transport whose close lingers while its protocol is in the middle of a request
    (`GuardedProtocol.linger`); everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.write = transport.write

    def close(self) -> None:
        if self._protocol.mid_message and not self._transport.is_closing():
            self._protocol.linger()
        else:
            self._transport.close()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `limits` (see the module). A
    server's class comes from `guarded`, which sets the class attributes."""

    limits: ClassVar[Limits]
    slots: ClassVar[Slots]
    metrics: ClassVar[Metrics]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True  # no head of a request has ended since the last message
        self._head_begun = False  # a byte of the current request has arrived
        self._head_bytes = 0  # bytes received while in a head (an upper bound)
        self._head_size = 0  # request target, names and values parsed so far
        self._fields = 0
        self.mid_message = False  # a request has begun and not ended
        self.lingering = False
        self._lingered = 0
        self._socket: asyncio.Transport | None = None

    # -- the connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._socket = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        if not self.slots.admit(self):
            transport.close()
            return
        self._arm(self.limits.header_timeout, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.slots.gone(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.close_now()
            return
        self._unset_keepalive_if_required()
        counted = self._in_head
        if counted:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # served as a plain request, as uvicorn does
            self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.error, "refused")
            else:
                self._refuse(MalformedError(f"not an HTTP/1.1 request: {exc}"), "refused")
            return
        if counted and self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(self._head_too_large(), "refused")

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.mid_message = True
        self._head_begun = True
        self._head_size = self._fields = 0
        if self._timer is None:  # between keep-alive requests: the head's clock starts
            self._arm(self.limits.header_timeout, self._head_late)

    def on_url(self, url: bytes) -> None:
        self._grow(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.limits.max_headers:
            raise _Refused(
                HeadersTooLargeError(f"more than {self.limits.max_headers} header fields")
            )
        self._grow(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_begun = False
        self.slots.busy(self)
        self._arm(self.limits.body_timeout, self._body_late)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self.mid_message = False
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def eof_received(self) -> None:
        if self.lingering:  # the client is done sending: nothing more to wait for
            self.close_now()

    def linger(self) -> None:
        """Close without a reset (see the module): the answer written so far goes out
        with a FIN after it; what the client still sends is dropped until it stops,
        `LINGER_BYTES` have come or `LINGER_SECONDS` have passed."""
        self.lingering = True
        self._arm(LINGER_SECONDS, self.close_now)
        self.flow.resume_reading()
        self.loop.call_soon(self._shut_write)  # after the writes of this turn leave

    def _shut_write(self) -> None:
        sock = self._socket
        if sock is not None and not sock.is_closing() and sock.can_write_eof():
            sock.write_eof()

    def close_now(self) -> None:
        """Close the connection at once, without lingering."""
        self._disarm()
        if self._socket is not None:
            self._socket.close()

    def on_response_complete(self) -> None:
        more = bool(self.pipeline)
        super().on_response_complete()
        if not more:
            self.slots.rest(self)

    # -- limits -------------------------------------------------------------------------

    def _grow(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.limits.max_header_bytes:
            raise _Refused(self._head_too_large())

    def _head_too_large(self) -> HeadersTooLargeError:
        return HeadersTooLargeError(
            f"the request head is longer than {self.limits.max_header_bytes} bytes"
        )

    def _arm(self, seconds: float, then: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_late(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if not self._head_begun:  # never said a word: nobody to answer
            self.metrics.inc(CONNECTIONS_CLOSED, reason="header-timeout")
            self.transport.close()
            return
        seconds = self.limits.header_timeout
        error = RequestTimeoutError(f"the request head did not arrive whole within {seconds} s")
        self._refuse(error, "header-timeout")

    def _body_late(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        seconds = self.limits.body_timeout
        error = RequestTimeoutError(f"the request body did not arrive whole within {seconds} s")
        self._refuse(error, "body-timeout")

    def _refuse(self, error: ControparteError, reason: str) -> None:
        """Answer `error` and close the connection; a route still running for the
        request sees the client gone. No answer when one has begun, or when the request
        whose body is late was answered already: the connection is only closed."""
        self._disarm()
        self.metrics.inc(CONNECTIONS_CLOSED, reason=reason)
        cycle = self.cycle
        if cycle is not None:
            answered = cycle.response_complete and not self._in_head
            if answered or (cycle.response_started and not cycle.response_complete):
                self.transport.close()
                return
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        reply = error_reply(error, self.metrics, 0)
        head = [STATUS_LINE[reply.status]]
        for name, value in [
            *self.server_state.default_headers,
            *reply.raw_headers(),
            (b"connection", b"close"),
        ]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", reply.body]))
        self.transport.close()


def guarded(base: type[GuardedProtocol], limits: Limits, metrics: Metrics) -> type[Any]:
    """A protocol class for one uvicorn server: `base` with `limits`, fresh `Slots` and
    `metrics` (the app's, so its refusals are counted with the app's errors)."""
    attributes = {"limits": limits, "slots": Slots(limits.max_connections, metrics)}
    return type(base.__name__, (base,), {**attributes, "metrics": metrics})

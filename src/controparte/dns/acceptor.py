"""The DNS TCP listener's accept loop: a connection is judged by its slots (`Slots`)
as it is accepted, before any transport, stream or task is made for it.

asyncio's own server makes a transport, a protocol, a reader, a writer and a task for
every connection before the handler can refuse it: about a hundred microseconds of the
event loop's time, so a client that opens connections as fast as they are closed keeps
the accept queue full, and another client's handshake waits in it (or is dropped and
retried after a second). Here a refused connection costs an `accept`, a dictionary look
and a reset (SO_LINGER 0: no TIME_WAIT left on the server for each), so the queue is
drained as fast as it fills. An admitted connection gets its streams and is served by
the handler; its slot is given back when the handler returns.

When the process runs out of file descriptors (EMFILE, ENFILE) or buffers, accepting
pauses for ACCEPT_PAUSE seconds, with one warning, instead of spinning on the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

from controparte.dns.slots import Slots, client_of

log = logging.getLogger("controparte.dns")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

ACCEPT_BATCH = 256
"""Connections accepted per readiness event at most (then the loop's other work)."""
ACCEPT_PAUSE = 0.5
"""Seconds accepting pauses when the process is out of descriptors or buffers."""
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Accepts on the listening socket `sock` in the running loop, within `slots`, and
    serves each admitted connection with `handler` (streams with `limit`)."""

    def __init__(self, sock: socket.socket, slots: Slots, handler: Handler, limit: int) -> None:
        self.sock = sock
        self._slots = slots
        self._handler = handler
        self._limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused: asyncio.TimerHandle | None = None

    def start(self, backlog: int) -> None:
        """Listen (with `backlog`) and accept from now on, in the running loop."""
        self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self.sock.listen(backlog)
        self._loop.add_reader(self.sock.fileno(), self._accept)

    async def close(self, grace: float) -> None:
        """Stop accepting, close the listening socket, and end the connections being
        served (cancelled, waited for at most `grace` seconds)."""
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        if self._paused is not None:
            self._paused.cancel()
        self.sock.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)

    def _accept(self) -> None:
        slots = self._slots
        accept = self.sock.accept
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause(exc)
                    return
                continue  # ECONNABORTED and the like: that connection is gone
            client = client_of(address[0])
            if not slots.take(client):
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                conn.close()
                continue
            conn.setblocking(False)
            assert self._loop is not None
            task = self._loop.create_task(self._serve(conn, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket, client: str) -> None:
        try:
            try:
                reader, writer = await asyncio.open_connection(sock=conn, limit=self._limit)
            except OSError:
                conn.close()
                return
            await self._handler(reader, writer)
        finally:
            self._slots.give(client)

    def _pause(self, exc: OSError) -> None:
        """Out of descriptors or buffers: stop accepting for ACCEPT_PAUSE seconds."""
        assert self._loop is not None
        log.warning(
            "dns: cannot accept TCP connections (%s): pausing %.1f s",
            exc.strerror or exc,
            ACCEPT_PAUSE,
        )
        self._loop.remove_reader(self.sock.fileno())
        self._paused = self._loop.call_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        assert self._loop is not None
        if self.sock.fileno() >= 0:
            self._loop.add_reader(self.sock.fileno(), self._accept)

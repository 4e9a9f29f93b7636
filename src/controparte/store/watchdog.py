"""A deadline on every exchange with a database server, kept from outside the thread
that waits.

A server that is frozen (SIGSTOP, a stuck disk, a hung host whose kernel still
answers) keeps its sockets open and acknowledges every byte: no socket timeout fires
(`connect_timeout`, `tcp_user_timeout` and keepalives all see a live peer), and a
thread reading its answer waits until it thaws. `Watchdog` holds the deadline of each
exchange in progress (`watch`); one thread of its own shuts the socket of an overdue
exchange down both ways (`shut_down`), so the blocked read sees end of file and the
driver raises its connection error, as for a server that went away. The thread that
waited is free again, the broken connection is discarded by its owner, and the
descriptor is only ever closed by its owner: the watchdog never closes it, acts on it
only while the exchange is registered (its owner is inside the read), and only when it
is still the socket it was (a descriptor closed and reused meanwhile is left alone).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("controparte.store")

TICK = 0.5
"""The longest the watchdog sleeps while something is watched: an exchange is broken
off at most this late (a new deadline does not wake the thread)."""


def shut_down(fd: int, inode: int | None = None) -> None:
    """Shut the socket `fd` down both ways: a thread blocked on it wakes up with end of
    file. The descriptor stays open (its owner closes it); one that is no socket any
    more, or (with `inode`) another socket than it was, is left alone."""
    with contextlib.suppress(OSError):
        if inode is not None and os.fstat(fd).st_ino != inode:
            return
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    """Breaks off exchanges that outlive their deadline (see the module). Thread-safe;
    its thread starts with the first `watch` and sleeps while nothing is watched."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._watched: dict[int, tuple[float, int, int, float]] = {}
        """By token: (deadline on the monotonic clock, socket, its inode, seconds
        allowed)."""
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self.fired = 0
        """Exchanges broken off so far."""

    @contextlib.contextmanager
    def watch(self, fd: int, seconds: float) -> Iterator[None]:
        """Shut the socket `fd` down if the block has not ended within `seconds`."""
        token = next(self._tokens)
        inode = os.fstat(fd).st_ino
        with self._cond:
            self._watched[token] = (time.monotonic() + seconds, fd, inode, seconds)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif len(self._watched) == 1:
                self._cond.notify()  # it sleeps until woken while nothing is watched
        try:
            yield
        finally:
            with self._cond:
                self._watched.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._watched:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for token, (deadline, fd, inode, seconds) in list(self._watched.items()):
                    if deadline <= now:
                        del self._watched[token]
                        self.fired += 1
                        log.warning(
                            "the database did not answer within %.0f s: connection broken off",
                            seconds,
                        )
                        shut_down(fd, inode)
                if self._watched:
                    next_due = min(entry[0] for entry in self._watched.values())
                    self._cond.wait(min(max(next_due - now, 0.01), TICK))

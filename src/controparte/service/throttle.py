"""Abuse control for credentials: a client (by address) that keeps failing
authentication is blocked for a while. Success does not reset a block in force.
Pure state with an injected clock; callers log the failures (never the secret)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from controparte.errors import RateLimitedError


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    blocked_until: float = 0.0


class FailureThrottle:
    """At most `max_failures` failures per `window` seconds; then `block` seconds out."""

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        block: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.clock = clock
        self.max_clients = max_clients
        self._clients: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Raise RateLimitedError while `client` is blocked."""
        with self._lock:
            record = self._clients.get(client)
            if record is not None and record.blocked_until > self.clock():
                raise RateLimitedError(
                    "too many failed authentications from this address; try again later"
                )

    def failed(self, client: str) -> bool:
        """Count a failure; True when it starts a block."""
        now = self.clock()
        with self._lock:
            if len(self._clients) >= self.max_clients:
                self._forget_idle(now)
            record = self._clients.setdefault(client, _Record())
            record.failures = [t for t in record.failures if t > now - self.window]
            record.failures.append(now)
            if len(record.failures) >= self.max_failures:
                record.blocked_until = now + self.block
                record.failures.clear()
                return True
        return False

    def succeeded(self, client: str) -> None:
        with self._lock:
            record = self._clients.get(client)
            if record is not None and record.blocked_until <= self.clock():
                del self._clients[client]

    def _forget_idle(self, now: float) -> None:
        for key in [
            k
            for k, r in self._clients.items()
            if r.blocked_until <= now and all(t <= now - self.window for t in r.failures)
        ]:
            del self._clients[key]

"""What a process knows of its database, told without waiting for it (`/healthz` and
`/metrics` of every HTTP process).

A health check must answer within a load balancer's timeout whatever the database
does, and a database that is down, restarting or frozen would hold a read for seconds
(the store's own timeouts). So `HealthWatch.report` reads the store in a thread of
its own (the zone serial and the number of installations), one check at a time, and
waits for it at most `deadline` seconds: a check that has not ended by then counts as
an unreachable database until one ends that reads it. Each report starts a check
(unless one is running), so what it tells is at most one check old.

`observe` is the rule, pure: reachability moves its `since` only when it changes.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import datetime

from controparte.errors import ControparteError
from controparte.model.installation import utcnow
from controparte.store import Store

log = logging.getLogger("controparte.health")

CHECK_DEADLINE = 2.0
"""Seconds a report waits for its check of the database."""


@dataclass(frozen=True, slots=True)
class Reachability:
    """Whether the database answered the last check, and since when that has been so
    (as this process saw it); `detail`: why not, when it did not."""

    reachable: bool
    since: datetime
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ServedZone:
    """The zone a DNS server of this process serves: its serial, and `age`: seconds
    since its snapshot was last found to be the store's newest."""

    serial: int
    age: float


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A report: the database, and the serial and the number of installations as the
    last check that read them found them (None before one has)."""

    database: Reachability
    serial: int | None
    installations: int | None


def observe(
    previous: Reachability, reachable: bool, at: datetime, detail: str | None = None
) -> Reachability:
    """The reachability after a check at `at`: `since` stays while nothing changes
    (the detail may), and is `at` when it does."""
    if previous.reachable == reachable:
        return replace(previous, detail=detail)
    return Reachability(reachable, at, detail)


class HealthWatch:
    """Checks of `store`, one at a time, each in a thread of its own (see the module).
    Thread-safe."""

    def __init__(self, store: Store, deadline: float = CHECK_DEADLINE) -> None:
        self.store = store
        self.deadline = deadline
        self._lock = threading.Lock()
        self._health = HealthReport(Reachability(True, utcnow()), None, None)
        self._running: Future[None] | None = None
        self._started = 0.0  # when the running check began (monotonic)

    def report(self) -> HealthReport:
        """What is known once a check has ended, or `deadline` seconds have passed."""
        with self._lock:
            running = self._running
            if running is None or running.done():
                running = self._running = Future()
                self._started = time.monotonic()
                threading.Thread(
                    target=self._check, args=(running,), name="health-check", daemon=True
                ).start()
            started = self._started
        try:
            running.result(self.deadline)
        except FutureTimeout:
            with self._lock:
                if not running.done():
                    waited = time.monotonic() - started
                    self._set(False, f"the database has not answered for {waited:.0f} s")
        with self._lock:
            return self._health

    def _set(
        self,
        reachable: bool,
        detail: str | None,
        serial: int | None = None,
        installations: int | None = None,
    ) -> None:
        """Record a check's outcome (with the lock held)."""
        health = self._health
        database = observe(health.database, reachable, utcnow(), detail)
        if reachable:
            health = HealthReport(database, serial, installations)
        else:
            if health.database.reachable:
                log.warning("the database cannot be reached: %s", detail)
            health = replace(health, database=database)
        if reachable and not self._health.database.reachable:
            log.info("the database can be reached again")
        self._health = health

    def _check(self, done: Future[None]) -> None:
        try:
            serial, installations = self.store.serial(), self.store.count()
        except ControparteError as exc:
            with self._lock:
                self._set(False, str(exc))
        except Exception:  # a bug: told as such, and the check goes on next time
            log.exception("the health check failed")
            with self._lock:
                self._set(False, "internal error in the health check")
        else:
            with self._lock:
                self._set(True, None, serial, installations)
        finally:
            done.set_result(None)

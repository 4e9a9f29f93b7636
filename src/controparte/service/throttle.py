"""Abuse control for credentials: failed authentications are counted per client
address and claim (the installation the credential claimed to be, `ADMIN` for an admin
token, `UNKNOWN` when it named none; an installation's claim is its code in lower
case) and per address alone, with a higher ceiling; a
claim, or the whole address, that reaches its ceiling within `window` seconds is
blocked for `block` seconds. So one misconfigured client behind a shared address (a
NAT) blocks only its own claim, while guessing across claims still meets the address's
ceiling. Success forgets its own claim's failures (not the address's, nor a block in
force).

The counts and blocks live in the store (`Store.auth_failed` and the rest), so they hold
across restarts, worker processes and nodes, and `controparte throttle list` and
`throttle clear` see and change what every server process enforces. A check never
waits for the store: each process keeps a view of the entries, read again by a thread
of its own (`close` stops it) at most every `refresh` seconds (so a clear reaches every
process within about that), and updated at once by its own failures. The store
failing leaves the view as it was. Callers log the failures (never the secret)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from controparte.errors import ControparteError, RateLimitedError
from controparte.store import Store, ThrottleEntry

log = logging.getLogger("controparte.service.throttle")

ADMIN = "(admin)"
"""The claim of a credential presented as an admin token (no code has parentheses)."""
UNKNOWN = "(unknown)"
"""The claim of a credential that named no installation."""
ADDRESS = ""
"""The claim that stands for the whole address."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Failures allowed per `window` seconds: `per_claim` for one claim from one
    address, `per_address` for all claims from it; then `block` seconds out."""

    per_claim: int = 5
    per_address: int = 20
    window: float = 60.0
    block: float = 300.0


def blocked(
    view: Mapping[tuple[str, str], ThrottleEntry], address: str, claim: str | None, now: float
) -> str | None:
    """Which of (the whole `address`, `claim` from it) is blocked at `now` (`ADDRESS`
    or the claim), None when neither is."""
    for key in (ADDRESS, claim):
        entry = None if key is None else view.get((address, key))
        if entry is not None and entry.blocked_until > now:
            return entry.claim
    return None


class FailureThrottle:
    """The failed-authentication throttle of one process over `store` (see the module).
    Thread-safe."""

    def __init__(
        self,
        store: Store,
        limits: Limits | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh: float = 1.0,
    ) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.clock = clock
        self.refresh = refresh
        self._view: dict[tuple[str, str], ThrottleEntry] = {}
        self._recent: dict[tuple[str, str], ThrottleEntry] = {}
        """This process's counts since the view was last read (a reading that began
        before them must not undo them)."""
        self._read_at = float("-inf")
        self._reading = threading.Lock()
        self._lock = threading.Lock()
        self._reader: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def block(self) -> float:
        """Seconds a block lasts (the `Retry-After` of a refusal)."""
        return self.limits.block

    def check(self, address: str, claim: str | None = None) -> None:
        """Raise RateLimitedError while `address`, or `claim` from it, is blocked."""
        now = self.clock()
        self._refresh_later(now)
        with self._lock:
            which = blocked(self._view, address, claim, now)
        if which == ADDRESS:
            raise RateLimitedError(
                "too many failed authentications from this address; try again later"
            )
        if which is not None:
            raise RateLimitedError(
                f"too many failed authentications as {which!r} from this address; try again later"
            )

    def failed(self, address: str, claim: str) -> list[str]:
        """Count a failure of `claim` from `address`; the blocks it starts (`ADDRESS`
        for the whole address, or the claim). Writes to the store."""
        limits = self.limits
        now = self.clock()
        try:
            entries = self.store.auth_failed(
                address,
                [(claim, limits.per_claim), (ADDRESS, limits.per_address)],
                limits.window,
                limits.block,
                now,
            )
        except ControparteError as exc:
            log.warning("cannot count a failed authentication from %s: %s", address, exc)
            return []
        with self._lock:
            for entry in entries:
                self._view[(entry.address, entry.claim)] = entry
                self._recent[(entry.address, entry.claim)] = entry
        return [e.claim for e in entries if e.blocked_until > now and e.failures == 0]

    def succeeded(self, address: str, claim: str) -> None:
        """Forget the failures of `claim` from `address` (a store write only when this
        process saw some)."""
        now = self.clock()
        with self._lock:
            entry = self._view.get((address, claim))
            if entry is None or entry.blocked_until > now:
                return
            del self._view[(address, claim)]
        try:
            self.store.auth_reset(address, claim, now)
        except ControparteError as exc:
            log.warning("cannot forget the failed authentications of %s: %s", address, exc)

    def entries(self) -> list[ThrottleEntry]:
        """What the store holds now that still counts: blocks in force, and failures in
        their window."""
        now = self.clock()
        start = now - self.limits.window
        return [
            e
            for e in self.store.throttle_entries()
            if e.blocked_until > now or (e.failures and e.window_start >= start)
        ]

    def clear(self, address: str) -> int:
        """Lift every block and forget every failure of `address`, for every process;
        how many entries it had."""
        removed = self.store.throttle_clear(address)
        with self._lock:
            for known in (self._view, self._recent):
                for key in [k for k in known if k[0] == address]:
                    del known[key]
        return removed

    def _refresh_later(self, now: float) -> None:
        """Read the store's entries again in a thread of its own when the view is older
        than `refresh` seconds (one reading at a time)."""
        if now - self._read_at < self.refresh or not self._reading.acquire(blocking=False):
            return
        with self._lock:
            if self._closed:
                self._reading.release()
                return
            self._read_at = now
            self._recent = {}
            if self._reader is None:
                self._reader = ThreadPoolExecutor(1, thread_name_prefix="throttle-view")
            self._reader.submit(self._read)

    def close(self) -> None:
        """Stop reading the store (waits for a reading in progress); before the store
        closes."""
        with self._lock:
            self._closed = True
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.shutdown(wait=True)

    def _read(self) -> None:
        try:
            entries = self.store.throttle_entries()
        except ControparteError as exc:
            log.debug("the throttle's view stays as it was: %s", exc)
        else:
            view = {(e.address, e.claim): e for e in entries}
            with self._lock:
                view.update(self._recent)
                self._view = view
        finally:
            self._reading.release()

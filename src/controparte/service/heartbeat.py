"""Heartbeats: "I am alive, and this is my public port". The public IP is what the
service sees (the request's source), never what the client claims.

`apply_beat` is the pure part: the installation after a beat. `HeartbeatWriter` applies
beats in group commits: one writer thread takes every beat that arrived while the
previous commit was syncing and commits them in one transaction, so a durable write
costs one fsync per batch, not per beat. The batch's installations and tokens are read
ahead in one go (`StoreTransaction.prefetch`: on PostgreSQL one locking statement, and
the batch's updates written set-based before the commit). A beat that changes nothing
DNS serves only moves last-seen (no journal entry, no new serial). Each result carries
the zone serial read once per batch right after its commit (the batch's own serial, or
a later one if another writer committed since), so the caller needs no store read of
its own.

Every beat is checked and written by the registry's one validate-and-write step
(`Registry.write`), inside the batch's transaction: its rules are the rules of every
other path. So a beat that moves a Live installation to a port outside the Live range
is refused (a ValidationError on `port`) and nothing of it is stored, not even
last-seen, while one reporting the port the installation already has passes, as
`Registry.update` of its address would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from controparte.errors import AuthError, ControparteError, NotFoundError, StorageError
from controparte.model import Installation, InstallationChange
from controparte.model.installation import utcnow, validate_port
from controparte.service.registry import Registry
from controparte.store import Origin, StoreTransaction

log = logging.getLogger("controparte.heartbeat")

MAX_BATCH = 1024


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat. With `token`, the writer checks it (`authenticate`) in the same
    transaction as it applies the beat, and `code` must be the installation's code."""

    code: str
    source: str  # the address the service saw the request come from
    port: int | None
    private_port: int | None = None
    version: str | None = None
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class BeatResult:
    installation: Installation
    changed: bool  # did what DNS serves change?
    serial: int  # the zone serial read right after the beat's commit


def apply_beat(
    inst: Installation, beat: Beat, now: datetime, *, allow_non_global: bool
) -> Installation:
    """The installation after `beat`: the source address replaces the address of its
    family, the port replaces the public port, last-seen moves to `now`, the private
    port and the agent version are what the beat says (a version not sent is kept).

    Raises ValidationError when a field's value is invalid; whether the registry's
    rules allow the result is `Registry.check`'s to say."""
    address = ipaddress.ip_address(beat.source)
    change = InstallationChange(
        ipv4=beat.source if address.version == 4 else None,
        ipv6=beat.source if address.version == 6 else None,
        port=beat.port,
    )
    updated = inst.with_changes(change, allow_non_global=allow_non_global, now=now)
    return replace(
        updated,
        last_seen=now,
        private_port=None if beat.private_port is None else validate_port(beat.private_port),
        agent_version=beat.version if beat.version is not None else inst.agent_version,
    )


_Waiter = concurrent.futures.Future[BeatResult] | asyncio.Future[BeatResult]
_Item = tuple[Beat, _Waiter]
_Done = tuple[_Waiter, Installation | Exception, bool]
_Settled = list[tuple[asyncio.Future[BeatResult], BeatResult | Exception]]


def _settle_on_loop(settled: _Settled) -> None:
    for future, outcome in settled:
        if future.done():  # cancelled: nobody waits for it any more
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class HeartbeatWriter:
    """Group-committing writer of beats into `registry`'s store, each checked and
    written by `registry.write`; `submit` is thread-safe, `beat` awaits one on the
    running event loop (the writer settles all of a batch's beats of one loop with one
    `call_soon_threadsafe`). `authenticate(code, token)`: how a beat's token is checked
    (`Access.authenticate_code`: the installation, or AuthError or NotFoundError); it
    runs in the writer's transaction, so its reads see that view and the caller's
    event loop does no store read at all for a beat. `on_change` is called after a
    batch that changed what DNS serves (the writer counts its own changes, `changed`,
    apart from the registry's)."""

    def __init__(
        self,
        registry: Registry,
        *,
        on_change: Callable[[], None] | None = None,
        authenticate: Callable[[str, str], Installation] | None = None,
    ) -> None:
        self.registry = registry
        self.store = registry.store
        self.allow_non_global = registry.settings.allow_non_global
        self.on_change = on_change
        self.authenticate = authenticate
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="heartbeat-writer", daemon=True)
        self._thread.start()
        self.batches = 0
        self.beats = 0
        self.changed = 0  # beats that changed what DNS serves (for metrics)
        self.serial = 0  # the zone serial after the last commit (0 before the first)

    def submit(self, beat: Beat) -> concurrent.futures.Future[BeatResult]:
        future: concurrent.futures.Future[BeatResult] = concurrent.futures.Future()
        self._queue.put((beat, future))
        return future

    async def beat(self, beat: Beat) -> BeatResult:
        """Apply `beat` in the next group commit and return its result (or raise its
        ControparteError); must be awaited on an event loop."""
        future: asyncio.Future[BeatResult] = asyncio.get_running_loop().create_future()
        self._queue.put((beat, future))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._commit(batch)
                    return
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[_Item]) -> None:
        now = utcnow()
        done: list[_Done] = []
        changed_any = False
        changed_count = 0
        try:
            with self.registry.transaction(Origin(via="heartbeat")) as tx:
                tx.prefetch(beat.code for beat, _ in batch)
                for beat, waiter in batch:
                    try:
                        old = self._installation(tx, beat)
                        new = apply_beat(old, beat, now, allow_non_global=self.allow_non_global)
                        new = self.registry.write(
                            tx,
                            old,
                            new,
                            Origin(actor=old.code, via="heartbeat", source=beat.source),
                        )
                        changed = new.dns_view() != old.dns_view()
                        changed_any |= changed
                        changed_count += changed
                        done.append((waiter, new, changed))
                    except ControparteError as exc:
                        done.append((waiter, exc, False))
        except Exception as exc:  # the whole batch failed: nothing was written
            if isinstance(exc, StorageError):  # the database: no traceback to tell
                log.warning("heartbeat batch of %d not saved: %s", len(batch), exc)
            else:
                log.exception("heartbeat batch of %d not saved", len(batch))
            self._settle([(waiter, exc) for _, waiter in batch])
            return
        self.batches += 1
        self.beats += len(batch)
        self.changed += changed_count
        if changed_any and self.on_change is not None:
            self.on_change()
        try:
            self.serial = self.store.serial()
        except ControparteError:  # committed all the same: answer with the last one known
            log.exception("cannot read the zone serial after a heartbeat batch")
        serial = self.serial
        settled: list[tuple[_Waiter, BeatResult | Exception]] = [
            (
                waiter,
                BeatResult(outcome, changed, serial)
                if isinstance(outcome, Installation)
                else outcome,
            )
            for waiter, outcome, changed in done
        ]
        self._settle(settled)

    def _installation(self, tx: StoreTransaction, beat: Beat) -> Installation:
        """The installation the beat is for, its token checked when it has one."""
        if beat.token is not None:
            if self.authenticate is None:
                raise AuthError("this writer cannot check tokens")
            return self.authenticate(beat.code, beat.token)
        old = tx.get(beat.code)
        if old is None:
            raise NotFoundError(f"no installation with code {beat.code!r}")
        return old

    @staticmethod
    def _settle(outcomes: list[tuple[_Waiter, BeatResult | Exception]]) -> None:
        """Resolve the waiters: thread futures here, event-loop futures on their loop,
        one call per loop."""
        loops: dict[asyncio.AbstractEventLoop, _Settled] = {}
        for waiter, outcome in outcomes:
            if isinstance(waiter, asyncio.Future):
                loops.setdefault(waiter.get_loop(), []).append((waiter, outcome))
            elif isinstance(outcome, Exception):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        for loop, settled in loops.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle_on_loop, settled)

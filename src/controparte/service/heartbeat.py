"""Heartbeats: "I am alive, and this is my public port". The public IP is what the
service sees (the request's source), never what the client claims.

`apply_beat` is the pure rule. `HeartbeatWriter` applies beats in group commits: one
writer thread takes every beat that arrived while the previous commit was syncing and
commits them in one transaction, so a durable write costs one fsync per batch, not per
beat. A beat that changes nothing DNS serves only moves last-seen (no journal entry, no
new serial).

A beat of a Live installation whose port lies outside the Live range is refused (a
ValidationError on `port`) and nothing of it is stored, not even last-seen.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from controparte.errors import ControparteError, NotFoundError
from controparte.model import Installation, InstallationChange
from controparte.model.installation import utcnow, validate_port
from controparte.plan.catalog import LiveSettings, packaged_catalog
from controparte.store import Origin, Store

log = logging.getLogger("controparte.heartbeat")

MAX_BATCH = 1024


@dataclass(frozen=True, slots=True)
class Beat:
    code: str
    source: str  # the address the service saw the request come from
    port: int | None
    private_port: int | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class BeatResult:
    installation: Installation
    changed: bool  # did what DNS serves change?


def apply_beat(
    inst: Installation,
    beat: Beat,
    now: datetime,
    *,
    allow_non_global: bool,
    live: LiveSettings | None = None,
) -> Installation:
    """The installation after `beat`: the source address replaces the address of its
    family, the port replaces the public port, last-seen moves to `now`.

    Raises ValidationError when a field breaks a rule, and (field `port`) when the
    installation is Live and the port lies outside the Live range of `live` (default:
    the packaged catalog's)."""
    address = ipaddress.ip_address(beat.source)
    change = InstallationChange(
        ipv4=beat.source if address.version == 4 else None,
        ipv6=beat.source if address.version == 6 else None,
        port=beat.port,
    )
    updated = inst.with_changes(change, allow_non_global=allow_non_global, now=now)
    (live if live is not None else packaged_catalog().live).check(updated)
    return replace(
        updated,
        last_seen=now,
        private_port=None if beat.private_port is None else validate_port(beat.private_port),
        agent_version=beat.version if beat.version is not None else inst.agent_version,
    )


_Item = tuple[Beat, "concurrent.futures.Future[BeatResult]"]


class HeartbeatWriter:
    """Group-committing writer of beats; `submit` is thread-safe. `live`: the Live
    settings beats are checked against (default: the packaged catalog's)."""

    def __init__(
        self,
        store: Store,
        *,
        allow_non_global: bool,
        on_change: Callable[[], None] | None = None,
        live: LiveSettings | None = None,
    ) -> None:
        self.store = store
        self.allow_non_global = allow_non_global
        self.live = live if live is not None else packaged_catalog().live
        self.on_change = on_change
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="heartbeat-writer", daemon=True)
        self._thread.start()
        self.batches = 0
        self.beats = 0
        self.changed = 0  # beats that changed what DNS serves (for metrics)

    def submit(self, beat: Beat) -> concurrent.futures.Future[BeatResult]:
        future: concurrent.futures.Future[BeatResult] = concurrent.futures.Future()
        self._queue.put((beat, future))
        return future

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
        results: list[tuple[concurrent.futures.Future[BeatResult], BeatResult | Exception]] = []
        changed_any = False
        changed_count = 0
        try:
            with self.store.transaction(Origin(via="heartbeat")) as tx:
                for beat, future in batch:
                    try:
                        old = tx.get(beat.code)
                        if old is None:
                            raise NotFoundError(f"no installation with code {beat.code!r}")
                        new = apply_beat(
                            old,
                            beat,
                            now,
                            allow_non_global=self.allow_non_global,
                            live=self.live,
                        )
                        changed = new.dns_view() != old.dns_view()
                        if new != old:
                            tx.update(
                                old,
                                new,
                                Origin(actor=old.code, via="heartbeat", source=beat.source),
                            )
                        changed_any |= changed
                        changed_count += changed
                        results.append((future, BeatResult(new, changed)))
                    except ControparteError as exc:
                        results.append((future, exc))
        except Exception as exc:  # the whole batch failed: nothing was written
            log.exception("heartbeat batch of %d not saved", len(batch))
            for _, future in batch:
                future.set_exception(exc)
            return
        self.batches += 1
        self.beats += len(batch)
        self.changed += changed_count
        if changed_any and self.on_change is not None:
            self.on_change()
        for future, outcome in results:
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

"""The relay's requests and its agents' polls (`Store.add_relay` and the rest of the
relay's part of the interface), written once for both engines: each engine supplies how
a read runs (`_rows`), how one write transaction runs (`_write`; both declared by
`Writes`), its placeholder, and, when it needs one, the statement that makes the adds
for one agent take turns (`RELAY_LOCK`: SQLite has one writer at a time already).

Every stamp is `rows.stamp` text (UTC, to the millisecond), so the SQL compares times
as text. Every write statement goes through the engine's runner, which answers the rows
a statement returns (none for most)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from controparte.store.base import RelayRequest
from controparte.store.rows import stamp, utc

T = TypeVar("T")

Runner = Callable[[str, Sequence[object]], Sequence[Sequence[Any]]]
"""Runs one statement inside the write transaction; the rows it returns."""

COLUMNS = "id, requester, agent, address, port, nonce, created, expires, claimed, report, finished"
"""A relay request's columns, in the order of `RelayRequest`'s fields."""

ID_RE = re.compile(r"[0-9a-f]{32}")
"""What a relay request's id looks like (128 random bits, hex): any other is none."""


def _row(row: Sequence[Any]) -> RelayRequest:
    rid, requester, agent, address, port, nonce, created, expires, claimed, report, done = row
    return RelayRequest(
        id=str(rid),
        requester=str(requester),
        agent=str(agent),
        address=str(address),
        port=int(port),
        nonce=str(nonce),
        created=utc(created),
        expires=utc(expires),
        claimed=None if claimed is None else utc(claimed),
        report=None if report is None else str(report),
        finished=None if done is None else utc(done),
    )


def _values(request: RelayRequest) -> tuple[object, ...]:
    return (
        request.id,
        request.requester,
        request.agent,
        request.address,
        request.port,
        request.nonce,
        stamp(request.created),
        stamp(request.expires),
        None if request.claimed is None else stamp(request.claimed),
        request.report,
        None if request.finished is None else stamp(request.finished),
    )


class Writes:
    """What the engine supplies to the mixins that write outside the registry's
    transactions (`Relays`, `guards.Guards`)."""

    PLACEHOLDER: ClassVar[str]

    def _rows(self, sql: str, params: Sequence[object] = ()) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    def _write(self, work: Callable[[Runner], T]) -> T:
        """`work` inside one write transaction of its own."""
        raise NotImplementedError


class Relays(Writes):
    """The relay's part of a store (a mixin beside `Reads`)."""

    RELAY_LOCK: ClassVar[str | None] = None
    """A statement taking a lock for the rest of the transaction on the agent's code
    (its one parameter, in lower case); None when writes take turns anyway."""

    def add_relay(self, request: RelayRequest, max_pending: int, purge_before: datetime) -> bool:
        p = self.PLACEHOLDER

        def add(run: Runner) -> bool:
            if self.RELAY_LOCK is not None:
                run(self.RELAY_LOCK, (request.agent.lower(),))
            run(f"DELETE FROM relay_requests WHERE expires < {p}", (stamp(purge_before),))
            pending = run(
                f"SELECT count(*) FROM relay_requests WHERE agent = {p} AND finished IS NULL"
                f" AND expires > {p}",
                (request.agent, stamp(request.created)),
            )
            if int(pending[0][0]) >= max_pending:
                return False
            marks = ", ".join([p] * len(_values(request)))
            run(f"INSERT INTO relay_requests ({COLUMNS}) VALUES ({marks})", _values(request))
            return True

        return self._write(add)

    def relay(self, request_id: str) -> RelayRequest | None:
        if ID_RE.fullmatch(request_id) is None:
            return None
        p = self.PLACEHOLDER
        found = self._rows(f"SELECT {COLUMNS} FROM relay_requests WHERE id = {p}", (request_id,))
        return _row(found[0]) if found else None

    def relays_waiting(self, agent: str, now: datetime) -> bool:
        p = self.PLACEHOLDER
        found = self._rows(
            f"SELECT 1 FROM relay_requests WHERE agent = {p} AND claimed IS NULL"
            f" AND expires > {p} LIMIT 1",
            (agent, stamp(now)),
        )
        return bool(found)

    def claim_relays(self, agent: str, now: datetime) -> list[RelayRequest]:
        p = self.PLACEHOLDER
        at = stamp(now)

        def claim(run: Runner) -> list[RelayRequest]:
            run(
                f"INSERT INTO relay_polls (code, at) VALUES ({p}, {p})"
                " ON CONFLICT (code) DO UPDATE SET at = excluded.at",
                (agent, at),
            )
            found = run(
                f"UPDATE relay_requests SET claimed = {p} WHERE agent = {p}"
                f" AND claimed IS NULL AND expires > {p} RETURNING {COLUMNS}",
                (at, agent, at),
            )
            return sorted((_row(r) for r in found), key=lambda r: (r.created, r.id))

        return self._write(claim)

    def finish_relay(self, request_id: str, agent: str, report: str, now: datetime) -> bool:
        if ID_RE.fullmatch(request_id) is None:
            return False
        p = self.PLACEHOLDER
        at = stamp(now)

        def finish(run: Runner) -> bool:
            found = run(
                f"UPDATE relay_requests SET report = {p}, finished = {p} WHERE id = {p}"
                f" AND agent = {p} AND claimed IS NOT NULL AND finished IS NULL"
                f" AND expires > {p} RETURNING id",
                (report, at, request_id, agent, at),
            )
            return bool(found)

        return self._write(finish)

    def relay_polled(self, agent: str) -> datetime | None:
        p = self.PLACEHOLDER
        found = self._rows(f"SELECT at FROM relay_polls WHERE code = {p}", (agent,))
        return utc(found[0][0]) if found else None

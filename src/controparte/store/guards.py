"""What guards the front ends and must hold across restarts, processes and nodes,
written once for both engines (a mixin beside `Reads` and `Relays`): the TSIG requests
already accepted (the replay guard of RFC 2136 UPDATE) and the failed-authentication
throttle's counts and blocks. Each engine supplies how a read runs, how one write
transaction runs and its placeholder (`relays.Writes`), and, when it needs one, the
statement that makes the acceptances of one TSIG key take turns (`TSIG_LOCK`: SQLite
has one writer at a time already).

Times are seconds since the epoch (float), the callers' clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from controparte.store.base import ThrottleEntry
from controparte.store.relays import Runner, Writes

_ENTRY = "address, claim, failures, window_start, blocked_until"


def _entry(row: Sequence[Any]) -> ThrottleEntry:
    address, claim, failures, window_start, blocked_until = row
    return ThrottleEntry(
        str(address), str(claim), int(failures), float(window_start), float(blocked_until)
    )


class Guards(Writes):
    """The replay guard's and the throttle's part of a store (a mixin)."""

    TSIG_LOCK: ClassVar[str | None] = None
    """A statement taking a lock for the rest of the transaction on a key name (its one
    parameter); None when writes take turns anyway."""

    # -- TSIG replay guard --------------------------------------------------------------

    def accept_tsig(
        self, key_name: str, mac: bytes, time_signed: int, expires: float, now: float
    ) -> bool:
        p = self.PLACEHOLDER

        def accept(run: Runner) -> bool:
            if self.TSIG_LOCK is not None:
                run(self.TSIG_LOCK, (key_name,))
            run(f"DELETE FROM tsig_seen WHERE expires < {p}", (now,))
            latest = run(
                f"SELECT max(time_signed) FROM tsig_seen WHERE key_name = {p}", (key_name,)
            )
            if latest and latest[0][0] is not None and time_signed < int(latest[0][0]):
                return False
            added = run(
                "INSERT INTO tsig_seen (key_name, mac, time_signed, expires)"
                f" VALUES ({p}, {p}, {p}, {p}) ON CONFLICT DO NOTHING RETURNING 1",
                (key_name, mac, time_signed, expires),
            )
            return bool(added)

        return self._write(accept)

    # -- failed-authentication throttle -------------------------------------------------

    def auth_failed(
        self,
        address: str,
        limits: Sequence[tuple[str, int]],
        window: float,
        block: float,
        now: float,
    ) -> list[ThrottleEntry]:
        p = self.PLACEHOLDER
        start = now - window

        def fail(run: Runner) -> list[ThrottleEntry]:
            run(
                f"DELETE FROM auth_failures WHERE blocked_until < {p} AND window_start < {p}",
                (now, start),
            )
            counted = []
            for claim, limit in limits:
                found = run(
                    "INSERT INTO auth_failures AS f"
                    " (address, claim, window_start, failures, blocked_until)"
                    f" VALUES ({p}, {p}, {p}, 1, 0) ON CONFLICT (address, claim) DO UPDATE SET"
                    f" failures = CASE WHEN f.window_start < {p} THEN 1 ELSE f.failures + 1 END,"
                    f" window_start = CASE WHEN f.window_start < {p} THEN {p}"
                    " ELSE f.window_start END"
                    f" RETURNING {_ENTRY}",
                    (address, claim, now, start, start, now),
                )
                entry = _entry(found[0])
                if entry.failures >= limit:
                    found = run(
                        f"UPDATE auth_failures SET failures = 0, window_start = {p},"
                        f" blocked_until = {p} WHERE address = {p} AND claim = {p}"
                        f" RETURNING {_ENTRY}",
                        (now, now + block, address, claim),
                    )
                    entry = _entry(found[0])
                counted.append(entry)
            return counted

        return self._write(fail)

    def auth_reset(self, address: str, claim: str, now: float) -> None:
        p = self.PLACEHOLDER
        self._write(
            lambda run: run(
                f"DELETE FROM auth_failures WHERE address = {p} AND claim = {p}"
                f" AND blocked_until <= {p}",
                (address, claim, now),
            )
        )

    def throttle_entries(self) -> list[ThrottleEntry]:
        found = self._rows(f"SELECT {_ENTRY} FROM auth_failures ORDER BY address, claim")
        return [_entry(row) for row in found]

    def throttle_clear(self, address: str) -> int:
        p = self.PLACEHOLDER
        removed = self._write(
            lambda run: run(
                f"DELETE FROM auth_failures WHERE address = {p} RETURNING 1", (address,)
            )
        )
        return len(removed)

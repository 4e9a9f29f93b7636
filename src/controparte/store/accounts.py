"""The dashboard's part of a store, written once for both engines (a mixin beside
`Reads`, `Relays` and `Guards`): its accounts and sessions, and the reads its pages
make (a page of the installations' list, the overview's counts). Each engine supplies
how a read runs, how one write transaction runs, its placeholder (`relays.Writes`) and
its case-insensitive LIKE (`LIKE`).

Stamps are `rows.stamp` text (UTC, to the millisecond), compared as text."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from controparte.store import rows
from controparte.store.base import (
    AccountRow,
    InstallationPage,
    InstallationQuery,
    RegistrySummary,
    Role,
    SessionRow,
)
from controparte.store.relays import Runner, Writes

_ACCOUNT = "name, role, password_hash, created"
_SESSION = "key, account, role, csrf, created, expires"


def _account(row: Sequence[Any]) -> AccountRow:
    name, role, password_hash, created = row
    return AccountRow(str(name), Role(str(role)), str(password_hash), rows.utc(created))


def _session(row: Sequence[Any]) -> SessionRow:
    key, account, role, csrf, created, expires = row
    return SessionRow(
        str(key), str(account), Role(str(role)), str(csrf), rows.utc(created), rows.utc(expires)
    )


def like_pattern(text: str) -> str:
    """`text` anywhere, as a LIKE pattern with `\\` as its escape character."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Accounts(Writes):
    """Accounts, sessions and the dashboard's reads (a mixin)."""

    LIKE: ClassVar[str] = "LIKE"
    """The operator that matches a pattern in any case (ASCII): SQLite's LIKE already
    does; PostgreSQL's ILIKE."""

    # -- the installations' list and the overview -----------------------------------------

    def search(self, query: InstallationQuery) -> InstallationPage:
        p = self.PLACEHOLDER
        where: list[str] = []
        params: list[object] = []
        if query.text:
            where.append(
                "("
                + " OR ".join(
                    f"{column} {self.LIKE} {p} ESCAPE '\\'"
                    for column in ("code", "label", "ipv4", "ipv6")
                )
                + ")"
            )
            params += [like_pattern(query.text)] * 4
        if query.kind is not None:
            where.append(f"kind = {p}")
            params.append(query.kind)
        if query.stale_before is not None:
            where.append(f"last_seen < {p}")
            params.append(query.stale_before.isoformat())
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        page = f" ORDER BY code LIMIT {p} OFFSET {p}"
        if query.text:
            # A text search reads every row: one pass that counts as it goes (a window
            # over the matches), instead of one to count and one for the page.
            found = self._rows(
                f"SELECT {rows.COLUMNS}, count(*) OVER () FROM installations{clause}{page}",
                [*params, query.limit, query.offset],
            )
            if found or query.offset == 0:
                total = int(found[0][-1]) if found else 0
                return InstallationPage(total, tuple(rows.installation(r[:-1]) for r in found))
        total = int(self._rows(f"SELECT count(*) FROM installations{clause}", params)[0][0])
        if total <= query.offset:
            return InstallationPage(total, ())
        found = self._rows(
            f"SELECT {rows.COLUMNS} FROM installations{clause}{page}",
            [*params, query.limit, query.offset],
        )
        return InstallationPage(total, tuple(rows.installation(row) for row in found))

    def summary(self, stale_before: datetime, changes_since: datetime) -> RegistrySummary:
        p = self.PLACEHOLDER
        kinds = self._rows("SELECT kind, count(*) FROM installations GROUP BY kind ORDER BY kind")
        stale = self._rows(
            f"SELECT count(*) FROM installations WHERE last_seen < {p}",
            (stale_before.isoformat(),),
        )
        changes = self._rows(
            f"SELECT count(*) FROM journal WHERE at >= {p}", (rows.stamp(changes_since),)
        )
        return RegistrySummary(
            {str(kind): int(count) for kind, count in kinds},
            int(stale[0][0]),
            int(changes[0][0]),
        )

    # -- accounts --------------------------------------------------------------------------

    def add_account(self, account: AccountRow) -> bool:
        p = self.PLACEHOLDER
        added = self._write(
            lambda run: run(
                f"INSERT INTO accounts ({_ACCOUNT}) VALUES ({p}, {p}, {p}, {p})"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (
                    account.name,
                    account.role.value,
                    account.password_hash,
                    rows.stamp(account.created),
                ),
            )
        )
        return bool(added)

    def account(self, name: str) -> AccountRow | None:
        p = self.PLACEHOLDER
        found = self._rows(f"SELECT {_ACCOUNT} FROM accounts WHERE name = {p}", (name,))
        return _account(found[0]) if found else None

    def accounts(self) -> list[AccountRow]:
        return [
            _account(row) for row in self._rows(f"SELECT {_ACCOUNT} FROM accounts ORDER BY name")
        ]

    def remove_account(self, name: str) -> bool:
        p = self.PLACEHOLDER

        def remove(run: Runner) -> bool:
            run(f"DELETE FROM sessions WHERE account = {p}", (name,))
            return bool(run(f"DELETE FROM accounts WHERE name = {p} RETURNING 1", (name,)))

        return self._write(remove)

    # -- sessions --------------------------------------------------------------------------

    def add_session(self, session: SessionRow, now: datetime) -> None:
        p = self.PLACEHOLDER

        def add(run: Runner) -> None:
            run(f"DELETE FROM sessions WHERE expires <= {p}", (rows.stamp(now),))
            run(
                f"INSERT INTO sessions ({_SESSION}) VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
                (
                    session.key,
                    session.account,
                    session.role.value,
                    session.csrf,
                    rows.stamp(session.created),
                    rows.stamp(session.expires),
                ),
            )

        self._write(add)

    def session(self, key: str, now: datetime) -> SessionRow | None:
        p = self.PLACEHOLDER
        found = self._rows(
            f"SELECT {_SESSION} FROM sessions WHERE key = {p} AND expires > {p}",
            (key, rows.stamp(now)),
        )
        return _session(found[0]) if found else None

    def end_session(self, key: str) -> None:
        p = self.PLACEHOLDER
        self._write(lambda run: run(f"DELETE FROM sessions WHERE key = {p}", (key,)))

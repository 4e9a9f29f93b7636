"""The reads both engines answer with the same SQL (`Reads`): each engine supplies how
one query runs (`_rows`), its placeholder and how it asks for no limit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from controparte.errors import StorageError
from controparte.model import Installation, Link
from controparte.store import rows
from controparte.store.base import (
    JournalEntry,
    JournalFloor,
    PortUse,
    SeenAddresses,
    TsigKeyRow,
)
from controparte.store.rows import COLUMNS, stamp


class Reads:
    """Reads of a store over `_rows`; `where` names the store in errors."""

    PLACEHOLDER: ClassVar[str]
    """How a query marks a parameter: `?` (sqlite3) or `%s` (psycopg)."""
    NO_LIMIT: ClassVar[int | None]
    """The LIMIT parameter that means none."""
    where: str

    def _rows(self, sql: str, params: Sequence[object] = ()) -> Sequence[Sequence[Any]]:
        """Every row of one query (`PLACEHOLDER`s bound to `params`)."""
        raise NotImplementedError

    def _one(self, sql: str, params: Sequence[object] = ()) -> Sequence[Any] | None:
        found = self._rows(sql, params)
        return found[0] if found else None

    def _int(self, sql: str) -> int:
        """The one number `sql` reads (0 when it reads nothing)."""
        row = self._one(sql)
        return 0 if row is None else int(str(row[0]))

    def get(self, code: str) -> Installation | None:
        if not rows.may_be_code(code):
            return None
        p = self.PLACEHOLDER
        row = self._one(f"SELECT {COLUMNS} FROM installations WHERE code = {p}", (code,))
        return None if row is None else rows.installation(row)

    def get_by_label(self, label: str) -> Installation | None:
        if not rows.may_be_label(label):
            return None
        p = self.PLACEHOLDER
        row = self._one(f"SELECT {COLUMNS} FROM installations WHERE label = {p}", (label.lower(),))
        return None if row is None else rows.installation(row)

    def installations(self, *, limit: int | None = None, offset: int = 0) -> list[Installation]:
        p = self.PLACEHOLDER
        found = self._rows(
            f"SELECT {COLUMNS} FROM installations ORDER BY code LIMIT {p} OFFSET {p}",
            (self.NO_LIMIT if limit is None else limit, offset),
        )
        return [rows.installation(r) for r in found]

    def live_ports(self, released_after: datetime) -> list[PortUse]:
        found = self._rows(rows.LIVE_PORTS.format(p=self.PLACEHOLDER), (stamp(released_after),))
        return [rows.port_use(r) for r in found]

    def count(self) -> int:
        return self._int("SELECT count(*) FROM installations")

    def serial(self) -> int:
        return self._int("SELECT serial FROM zone_state WHERE id = 1")

    def journal_since(self, seq: int, limit: int = 10_000) -> list[JournalEntry]:
        p = self.PLACEHOLDER
        found = self._rows(
            f"{rows.JOURNAL_READ} WHERE seq > {p} ORDER BY seq LIMIT {p}", (seq, limit)
        )
        return [rows.journal_entry(r) for r in found]

    def journal_floor(self) -> JournalFloor:
        row = self._one("SELECT floor_seq, floor_serial FROM zone_state WHERE id = 1")
        if row is None:
            raise StorageError(f"the store at {self.where} has no zone state")
        return JournalFloor(int(str(row[0])), int(str(row[1])))

    def _secret_fingerprint(self) -> str | None:
        """The server secret's fingerprint recorded (`Store.adopt_secret_fingerprint`)."""
        row = self._one("SELECT secret_fingerprint FROM zone_state WHERE id = 1")
        return None if row is None or row[0] is None else str(row[0])

    def token_hash(self, code: str) -> str | None:
        if not rows.may_be_code(code):
            return None
        p = self.PLACEHOLDER
        row = self._one(f"SELECT token_hash FROM tokens WHERE code = {p}", (code,))
        return None if row is None else str(row[0])

    def admin_token_hashes(self) -> list[str]:
        return [str(r[0]) for r in self._rows("SELECT token_hash FROM admin_tokens")]

    def tsig_key(self, name: str) -> TsigKeyRow | None:
        p = self.PLACEHOLDER
        row = self._one(
            f"SELECT name, code, algorithm, secret, role FROM tsig_keys WHERE name = {p}",
            (name.lower(),),
        )
        return None if row is None else rows.tsig_key(row)

    def history(self, code: str) -> list[dict[str, object]]:
        p = self.PLACEHOLDER
        found = self._rows(
            "SELECT at, action, actor, via, source, old, new FROM history"
            f" WHERE code = {p} ORDER BY id",
            (code,),
        )
        return [rows.history_entry(r) for r in found]

    def links(self, code: str | None = None) -> list[Link]:
        p = self.PLACEHOLDER
        sql = "SELECT a, b, feature, created FROM links"
        params: tuple[str, ...] = ()
        if code is not None:
            sql += f" WHERE a = {p} OR b = {p}"
            params = (code, code)
        return [rows.link(r) for r in self._rows(sql + " ORDER BY a, b, feature", params)]

    def firewall_seen(self, code: str) -> dict[str, SeenAddresses]:
        p = self.PLACEHOLDER
        found = self._rows(
            f"SELECT counterpart, addresses, at FROM firewall_seen WHERE code = {p}"
            " ORDER BY counterpart",
            (code,),
        )
        return {str(r[0]): rows.seen_addresses(r) for r in found}

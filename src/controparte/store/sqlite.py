"""The SQLite store: WAL, synchronous=FULL (an acknowledged write survives a crash),
versioned schema (`schema.py`) migrated on open.

Writes go through one connection under a lock, one transaction at a time. Reads go
through a read-only connection per thread (opened on first use): in WAL mode a reader
sees the last committed state and neither waits for the writer (nor its fsync) nor
holds it up. A read by the thread that is inside a write transaction uses the writer's
connection, so it sees its own uncommitted changes, as before.

Processes that share the data directory (a CLI beside a running server, HTTP worker
processes) take turns to write through a lock file beside the database
(`<db>-writer.lock`, flock): a writer waits for the one before it in the kernel and
starts the moment the lock is free. SQLite's busy timeout alone would make it poll with
growing sleeps (1, 2, 5, ... 100 ms) and lose the race again and again to a writer
that never sleeps (seconds of delay under load). SQLite's own locking still guards
against any writer that does not take the lock file; the busy timeout applies to it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from controparte.errors import ConflictError, StorageError
from controparte.model import DnsRecord, Installation, Link
from controparte.store import private, rows
from controparte.store.accounts import Accounts
from controparte.store.base import (
    KeyRole,
    Origin,
    PortUse,
)
from controparte.store.guards import Guards
from controparte.store.reads import Reads
from controparte.store.relays import Relays, Runner
from controparte.store.results import Results
from controparte.store.rows import (
    ADOPT_FINGERPRINT,
    COLUMNS,
    HISTORY_COLUMNS,
    JOURNAL_COLUMNS,
    next_serial,
)
from controparte.store.schema import migrate

T = TypeVar("T")

DB_FILE = "controparte.sqlite3"


_ROW = ", ".join("?" * len(COLUMNS.split(",")))
"""The placeholders of an installation's row."""

LAST_SEQ = (
    "SELECT max(coalesce((SELECT max(seq) FROM journal), 0), floor_seq) FROM zone_state"
    " WHERE id = 1"
)
"""The last journal seq handed out: the newest entry's, or the floor's once pruning has
removed every entry (AUTOINCREMENT never hands a seq out twice)."""


class _Transaction:
    """Writes of one SQLite transaction; records what DNS must learn of them."""

    def __init__(self, conn: sqlite3.Connection, origin: Origin) -> None:
        self._conn = conn
        self._origin = origin
        self.dns_changes: list[tuple[str, Installation | None, Installation | None]] = []
        """(code, before, after) of every change to what DNS serves, in order."""

    def get(self, code: str) -> Installation | None:
        if not rows.may_be_code(code):
            return None
        row = self._conn.execute(
            f"SELECT {COLUMNS} FROM installations WHERE code = ?", (code,)
        ).fetchone()
        return None if row is None else rows.installation(row)

    def get_by_label(self, label: str) -> Installation | None:
        if not rows.may_be_label(label):
            return None
        row = self._conn.execute(
            f"SELECT {COLUMNS} FROM installations WHERE label = ?", (label.lower(),)
        ).fetchone()
        return None if row is None else rows.installation(row)

    def live_ports(self, released_after: datetime) -> list[PortUse]:
        found = self._conn.execute(
            rows.LIVE_PORTS.format(p="?"), (rows.stamp(released_after),)
        ).fetchall()
        return [rows.port_use(r) for r in found]

    def prefetch(self, codes: Iterable[str]) -> None:
        """Nothing to do: SQLite reads each row in memory-mapped pages, one writer at
        a time."""

    def _history(
        self,
        code: str,
        action: str,
        old: Installation | None,
        new: Installation | None,
        origin: Origin | None = None,
    ) -> None:
        self._conn.execute(
            f"INSERT INTO history ({HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows.history_row(code, action, origin or self._origin, old, new),
        )

    def insert(self, installation: Installation) -> None:
        try:
            self._conn.execute(
                f"INSERT INTO installations ({COLUMNS}) VALUES ({_ROW})", rows.values(installation)
            )
        except sqlite3.IntegrityError as exc:
            raise _conflict(exc, installation) from None
        self._history(installation.code, "add", None, installation)
        self.dns_changes.append((installation.code, None, installation))

    def update(self, old: Installation, new: Installation, origin: Origin | None = None) -> None:
        try:
            self._conn.execute(
                "UPDATE installations SET label = ?, kind = ?, ipv4 = ?, ipv6 = ?, port = ?,"
                " updated = ?, last_seen = ?, private_port = ?, agent_version = ?, gateway = ?"
                " WHERE code = ?",
                (
                    new.label,
                    new.kind.value,
                    new.ipv4,
                    new.ipv6,
                    new.port,
                    new.updated.isoformat(),
                    None if new.last_seen is None else new.last_seen.isoformat(),
                    new.private_port,
                    new.agent_version,
                    new.gateway,
                    old.code,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise _conflict(exc, new) from None
        self._release(old, new)
        if old.dns_view() != new.dns_view():
            self.dns_changes.append((old.code, old, new))
        if rows.audited(old) != rows.audited(new):
            self._history(old.code, "update", old, new, origin)

    def set_token_hash(self, code: str, token_hash: str) -> None:
        self._conn.execute(
            "INSERT INTO tokens (code, token_hash, created) VALUES (?, ?, ?)"
            " ON CONFLICT (code) DO UPDATE SET token_hash = excluded.token_hash,"
            " created = excluded.created",
            (code, token_hash, rows.now()),
        )
        self._history(code, "token", None, None)

    def add_admin_token(self, token_hash: str, note: str | None) -> None:
        self._conn.execute(
            "INSERT INTO admin_tokens (token_hash, note, created) VALUES (?, ?, ?)",
            (token_hash, note, rows.now()),
        )

    def set_tsig_key(
        self,
        name: str,
        code: str | None,
        algorithm: str,
        secret: bytes,
        role: KeyRole = KeyRole.UPDATE,
    ) -> None:
        """Store (or replace) a TSIG key; an installation keeps one key at a time."""
        if code is not None:
            self._conn.execute("DELETE FROM tsig_keys WHERE code = ?", (code,))
            self._history(code, "tsig-key", None, None)
        self._conn.execute(
            "INSERT OR REPLACE INTO tsig_keys (name, code, algorithm, secret, created, role)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, code, algorithm, secret, rows.now(), KeyRole(role).value),
        )

    def _release(self, old: Installation, new: Installation | None) -> None:
        freed = rows.released(old, new)
        if freed is not None:
            self._conn.execute(rows.RELEASE.format(p="?"), freed)

    def delete(self, installation: Installation) -> None:
        self._conn.execute("DELETE FROM installations WHERE code = ?", (installation.code,))
        self._release(installation, None)
        self._history(installation.code, "remove", installation, None)
        self.dns_changes.append((installation.code, installation, None))

    def _link_history(self, action: str, link: Link) -> None:
        self._conn.executemany(
            f"INSERT INTO history ({HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows.link_history_rows(action, link, self._origin),
        )

    def add_link(self, link: Link) -> bool:
        try:
            cursor = self._conn.execute(
                "INSERT INTO links (a, b, feature, created) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (a, b, feature) DO NOTHING",
                (link.a, link.b, link.feature, link.created.isoformat()),
            )
        except sqlite3.IntegrityError as exc:
            raise ConflictError(
                f"cannot link {link.a} to {link.b}: {exc} (does each installation exist?)"
            ) from None
        if cursor.rowcount == 0:
            return False
        self._link_history("link", link)
        return True

    def remove_link(self, a: str, b: str, feature: str | None = None) -> list[Link]:
        where = "a = ? AND b = ?" + ("" if feature is None else " AND feature = ?")
        params: tuple[str, ...] = (a, b) if feature is None else (a, b, feature)
        found = self._conn.execute(
            f"SELECT a, b, feature, created FROM links WHERE {where} ORDER BY feature", params
        ).fetchall()
        self._conn.execute(f"DELETE FROM links WHERE {where}", params)
        removed = [rows.link(r) for r in found]
        for link in removed:
            self._link_history("unlink", link)
        return removed

    def set_firewall_seen(
        self, code: str, seen: Mapping[str, tuple[str, ...]], at: datetime
    ) -> None:
        self._conn.execute("DELETE FROM firewall_seen WHERE code = ?", (code,))
        self._conn.executemany(
            "INSERT INTO firewall_seen (code, counterpart, addresses, at) VALUES (?, ?, ?, ?)",
            rows.seen_rows(code, seen, at),
        )


def _conflict(exc: sqlite3.IntegrityError, inst: Installation) -> ConflictError:
    text = str(exc)
    if "installations.label" in text:
        return rows.label_taken(inst)
    if "installations.code" in text:
        return rows.code_taken(inst)
    if "installations.gateway" in text:
        return rows.pair_taken(inst)
    return ConflictError(f"the change conflicts with existing data ({text})")


class SqliteStore(Reads, Relays, Guards, Accounts, Results):
    """`Store` on one SQLite file in WAL mode."""

    PLACEHOLDER = "?"
    NO_LIMIT = -1

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.where = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.RLock()
        self._writing: int | None = None  # the thread inside a write transaction
        self._local = threading.local()  # .conn: this thread's read-only connection
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        try:
            private.make_dir(path.parent)
            private.ensure_file(path)  # 0600: SQLite gives -wal and -shm its mode
            self._conn = sqlite3.connect(
                path,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout_ms / 1000,
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            with self._lock:
                migrate(self._conn, path)
            lock = path.with_name(path.name + "-writer.lock")
            private.ensure_file(lock)
            self._writer_lock = os.open(lock, os.O_RDWR)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the store at {path}: {exc}") from None
        self._uri = path.resolve().as_uri() + "?mode=ro"

    # -- writes -----------------------------------------------------------------------

    @contextmanager
    def transaction(self, origin: Origin) -> Iterator[_Transaction]:
        with self._lock, self._turn():
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot start a write: {exc}") from None
            outer = self._writing
            self._writing = threading.get_ident()
            tx = _Transaction(self._conn, origin)
            try:
                yield tx
                if tx.dns_changes:
                    self._journal(tx.dns_changes)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StorageError(f"the change was not saved: {exc}") from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._writing = outer

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn to write among the processes that share the store (the
        lock file; see the module). Called with `_lock` held; reentrant like it."""
        if self._writing is not None:
            yield
            return
        if self._writer_lock < 0:
            raise StorageError(f"cannot write to the store at {self.path}: it is closed")
        try:
            fcntl.flock(self._writer_lock, fcntl.LOCK_EX)
        except OSError as exc:
            raise StorageError(f"cannot start a write: {exc}") from None
        try:
            yield
        finally:
            fcntl.flock(self._writer_lock, fcntl.LOCK_UN)

    def _journal(
        self, changes: Sequence[tuple[str, Installation | None, Installation | None]]
    ) -> None:
        serial = next_serial(
            int(self._conn.execute("SELECT serial FROM zone_state WHERE id = 1").fetchone()[0])
        )
        self._conn.execute("UPDATE zone_state SET serial = ? WHERE id = 1", (serial,))
        at = rows.now()
        self._conn.executemany(
            f"INSERT INTO journal ({JOURNAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [rows.journal_row(serial, at, code, old, new) for code, old, new in changes],
        )

    # -- reads ------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        """The connection for a read by this thread: the writer's inside this thread's
        own transaction (the lock is held then), else this thread's read-only one."""
        if self._writing == threading.get_ident():
            return self._conn
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open_reader()
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        """A read-only connection for this thread; the connections of threads that
        have ended are closed on the way (thread pools come and go)."""
        with self._readers_lock:
            if self._closed:
                raise StorageError(f"cannot read the store at {self.path}: it is closed")
            alive = []
            for thread, old in self._readers:
                if thread.is_alive():
                    alive.append((thread, old))
                else:
                    old.close()
            try:
                conn = sqlite3.connect(
                    self._uri,
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,  # close() may come from another thread
                    timeout=self._busy_timeout_ms / 1000,
                )
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read the store at {self.path}: {exc}") from None
            alive.append((threading.current_thread(), conn))
            self._readers = alive
        self._local.conn = conn
        return conn

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Every row of one query, read in one statement (its own read transaction:
        the cursor is done before this returns, so no read stays open)."""
        try:
            cursor = self._reader().execute(sql, params)
            try:
                return cursor.fetchall()
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the store: {exc}") from None

    def last_seq(self) -> int:
        return self._int(LAST_SEQ)

    def journal_reach(self, serial: int) -> int | None:
        conn = self._reader()
        own = conn is not self._conn  # else: inside this thread's write transaction
        try:
            if own:
                conn.execute("BEGIN")
            try:
                floor_seq, floor_serial = conn.execute(
                    "SELECT floor_seq, floor_serial FROM zone_state WHERE id = 1"
                ).fetchone()
                found = conn.execute(
                    "SELECT max(seq) FROM journal WHERE serial = ? AND seq > ?",
                    (serial, floor_seq),
                ).fetchone()[0]
            finally:
                if own:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the store: {exc}") from None
        if found is not None:
            return int(found)
        return int(floor_seq) if int(floor_serial) == serial else None

    def adopt_zone_config(self, fingerprint: str) -> bool:
        with self.transaction(Origin(actor="controparte", via="zone-config")):
            conn = self._conn
            serial, recorded = conn.execute(
                "SELECT serial, zone_config FROM zone_state WHERE id = 1"
            ).fetchone()
            if recorded == fingerprint:
                return False
            if recorded is None:  # the first configuration this store serves
                conn.execute("UPDATE zone_state SET zone_config = ? WHERE id = 1", (fingerprint,))
                return False
            moved = next_serial(int(serial))
            last = int(conn.execute(LAST_SEQ).fetchone()[0])
            conn.execute(
                "UPDATE zone_state SET serial = ?, floor_seq = ?, floor_serial = ?,"
                " zone_config = ? WHERE id = 1",
                (moved, last, moved, fingerprint),
            )
            return True

    def adopt_secret_fingerprint(self, fingerprint: str) -> str:
        recorded = self._secret_fingerprint()
        if recorded is not None:
            return recorded
        with self.transaction(Origin(actor="controparte", via="server-secret")):
            row = self._conn.execute(
                ADOPT_FINGERPRINT.format(p=self.PLACEHOLDER), (fingerprint,)
            ).fetchone()
            return str(row[0])

    def prune_journal(self, keep_entries: int, keep_seconds: float, now: datetime) -> int:
        cutoff = rows.stamp(now - timedelta(seconds=keep_seconds))
        with self.transaction(Origin(actor="controparte", via="prune")):
            conn = self._conn
            last = int(conn.execute(LAST_SEQ).fetchone()[0])
            by_count = last - keep_entries
            by_age = conn.execute(
                "SELECT max(seq) FROM journal WHERE at < ?", (cutoff,)
            ).fetchone()[0]
            upto = max(by_count, 0 if by_age is None else int(by_age))
            if upto <= 0:
                return 0
            # Whole serials: up to the last entry of the transaction of entry `upto`.
            row = conn.execute(
                "SELECT serial, (SELECT max(seq) FROM journal j2 WHERE j2.serial = j1.serial"
                " AND j2.seq >= j1.seq) FROM journal j1 WHERE seq <= ? ORDER BY seq DESC"
                " LIMIT 1",
                (upto,),
            ).fetchone()
            if row is None:
                return 0
            floor_serial, floor_seq = int(row[0]), int(row[1])
            removed = conn.execute("DELETE FROM journal WHERE seq <= ?", (floor_seq,)).rowcount
            conn.execute(
                "UPDATE zone_state SET floor_seq = ?, floor_serial = ? WHERE id = 1",
                (floor_seq, floor_serial),
            )
            return int(removed)

    def _write(self, work: Callable[[Runner], T]) -> T:
        with self.transaction(Origin(actor="controparte", via="store")):
            conn = self._conn
            return work(lambda sql, params: conn.execute(sql, params).fetchall())

    def dns_snapshot(self, consume: Callable[[Iterable[DnsRecord]], T]) -> tuple[int, int, T]:
        conn = self._reader()
        own = conn is not self._conn  # else: inside this thread's write transaction
        try:
            if own:
                conn.execute("BEGIN")
            try:
                serial = int(
                    conn.execute("SELECT serial FROM zone_state WHERE id = 1").fetchone()[0]
                )
                seq = int(conn.execute(LAST_SEQ).fetchone()[0])
                cursor = conn.execute("SELECT label, ipv4, ipv6, port FROM installations")
                cursor.arraysize = 10_000
                try:
                    result = consume(map(rows.record, cursor))
                finally:
                    cursor.close()
            finally:
                if own:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the store: {exc}") from None
        return serial, seq, result

    def close(self) -> None:
        """Close the writer's connection and every thread's read connection; a read
        after this raises StorageError."""
        with self._readers_lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for _, conn in readers:
            conn.close()
        with self._lock:
            self._conn.close()
            if self._writer_lock >= 0:
                os.close(self._writer_lock)
                self._writer_lock = -1

    def change_listener(self) -> None:
        """None: processes sharing a SQLite file learn of changes by polling the
        journal (`journal_poll_interval`)."""
        return None

    @classmethod
    def in_directory(cls, data_dir: Path) -> SqliteStore:
        """The store kept in `data_dir` (created if missing)."""
        return cls(data_dir / DB_FILE)

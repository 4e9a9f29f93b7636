"""The PostgreSQL store: one database that several service nodes share (psycopg 3).

What the database guarantees to writers on every node at once:
- No lost update: a write transaction runs in READ COMMITTED and reads installations
  with `SELECT ... FOR NO KEY UPDATE`, so a second writer of a row waits for the first
  and then reads its result. A batch (`prefetch`) locks its rows in code order, so
  batches never deadlock one another; a deadlock that happens all the same (a
  transaction locking rows in another order) is retried where the store runs the
  whole transaction itself, and is a StorageUnavailableError (retry) elsewhere.
- One zone serial, and a journal in commit order: a transaction that changes what DNS
  serves takes its new serial (RFC 1982) and its range of journal sequence numbers in
  one `UPDATE zone_state ... RETURNING`, with its journal rows, as its last statement
  before COMMIT. The row's lock lets one such commit through at a time, so sequence
  numbers grow in commit order with no gap, and a reader of `seq > N` misses nothing.
  The same statement notifies `CHANNEL` with the last seq (delivered at COMMIT, never
  after a rollback): `PgChangeListener` wakes the followers of every node.
- Codes unique in any case (`citext`) and labels unique: the constraints; a conflict is
  a ConflictError, told by the constraint's name, and leaves the transaction usable.

Connections come from a pool opened without waiting for it: the pool reconnects by
itself in the background (a node keeps serving DNS from its snapshot while the
database is down), checks each connection before lending it (no dead connection after
a server restart: each dead one is discarded and the next one drawn at once, see
`_lend`), and every connection has timeouts (`CONNECT_OPTIONS`) that turn a
lost server into an error within seconds. Anything that looks like the database being
unreachable, restarting or too slow is a `StorageUnavailableError`: the request may be
retried. A transaction borrows one connection for its whole length, bound to its
thread: the thread's reads through the store inside it see its writes.

A heartbeat batch reads and writes set-based: `prefetch` locks and reads the batch's
rows and token hashes in one statement; updates that keep the label are buffered and
written in one `UPDATE ... FROM unnest(...)`, with the history rows in one `INSERT`,
before the next statement that reads or at the commit. These statements take their
arrays in binary (`%b`): the history's JSON as text array literals, quoted and parsed,
cost four times as much (4.2 against 0.9 ms for 34 rows).

The schema is migrated when the store opens (`schema.migrate_postgres`, under an
advisory lock), which needs the database then.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from controparte.errors import ConflictError, StorageError, StorageUnavailableError
from controparte.model import DnsRecord, Installation, Link
from controparte.settings import redacted_database
from controparte.store import rows
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
from controparte.store.rows import ADOPT_FINGERPRINT, COLUMNS, HISTORY_COLUMNS, JOURNAL_COLUMNS
from controparte.store.schema import SCHEMA_LOCK, migrate_postgres
from controparte.store.watchdog import Watchdog, shut_down

T = TypeVar("T")
RV = TypeVar("RV")
Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]

log = logging.getLogger("controparte.store")

CHANNEL = "controparte_journal"
"""The channel notified, with the last journal seq, by every commit that adds to the
journal."""

PRUNE_LOCK = SCHEMA_LOCK + 1
"""The advisory lock of a journal pruning: one node prunes at a time, others skip."""

RELAY_LOCK_CLASS = 0x72656C61
"""The first key of the advisory locks that make the relay requests for one agent take
turns ("rela"; the second is the hash of the agent's code in lower case)."""

LIVE_POOL_LOCK = 0x6C697665
"""The advisory lock a transaction takes, to its end, before it reads the Live pool to
place an installation ("live"): placements of every node take turns, so a gateway's
capacity holds (a count no constraint can keep); the unique (gateway, port) holds
whatever a writer does."""

TSIG_LOCK_CLASS = 0x74736967
"""The first key of the advisory locks that make the acceptances of signed requests with
one TSIG key take turns ("tsig"; the second is the hash of the key's name)."""

CONNECT_OPTIONS: Mapping[str, str] = {
    "connect_timeout": "2",  # libpq's least
    "tcp_user_timeout": "5000",  # ms: a server that stopped answering mid-query
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "2",
    "application_name": "controparte",
}
"""libpq settings of every connection, unless the URL sets them."""

SESSION_OPTIONS = "-c lock_timeout=5000 -c idle_in_transaction_session_timeout=15000"
"""Server settings of every session (before the URL's own `options`): a lock held by a
stuck node ends a waiting write in 5 s, and a node that vanished inside a transaction
loses it (and its locks) after 15 s."""

ROUND_TRIP_TIMEOUT = 6.0
"""Seconds one exchange with the server (a statement and its rows, a COMMIT, the pool's
check of a connection) may take before the connection is broken off
(`store/watchdog.py`): a frozen server answers no timeout of the socket's. Longer than
the session's `lock_timeout`, so a write that waits for a lock fails by that first."""

POOL_SIZE = 8
POOL_TIMEOUT = 5.0
"""Seconds a store operation waits for a pooled connection (all busy, or the database
unreachable) before StorageUnavailableError."""

RECONNECT_GIVE_UP = 2.0
"""Seconds the pool keeps retrying a connection it lost before it gives up; the next
operation that needs one starts a new attempt at once. The pool's pause between two
attempts doubles each time, so a longer patience would leave a node waiting for its
next attempt long after the database is back."""

RETRIES = 3
"""Attempts of a transaction the store runs itself when a deadlock ends it."""

LISTEN_BACKOFF = (0.05, 5.0)
"""The first and the longest pause between two connection attempts of a listener."""
PROBE_AFTER = 5.0
"""Seconds without traffic after which a waiting listener checks its connection."""

_INSTALLATION = ", ".join(f"i.{name.strip()}" for name in COLUMNS.split(","))

_LOCKED_BATCH = (
    f"SELECT {_INSTALLATION}, t.token_hash FROM installations i"
    " LEFT JOIN tokens t ON t.code = i.code"
    " WHERE i.code = ANY(%b::citext[]) ORDER BY i.code FOR NO KEY UPDATE OF i"
)
"""A batch's rows, locked in code order (batches never wait for each other in a
cycle), with their token hashes."""

_UPDATE_BATCH = (
    "UPDATE installations AS i SET kind = u.kind, ipv4 = u.ipv4, ipv6 = u.ipv6,"
    " port = u.port, updated = u.updated, last_seen = u.last_seen,"
    " private_port = u.private_port, agent_version = u.agent_version, gateway = u.gateway"
    " FROM unnest(%b::citext[], %b::text[], %b::text[], %b::text[], %b::integer[],"
    " %b::text[], %b::text[], %b::integer[], %b::text[], %b::text[])"
    " AS u(code, kind, ipv4, ipv6, port, updated, last_seen, private_port, agent_version,"
    " gateway)"
    " WHERE i.code = u.code"
)
"""Buffered updates (labels and Live placements unchanged), one row each."""

_HISTORY_BATCH = (
    f"INSERT INTO history ({HISTORY_COLUMNS}) SELECT {HISTORY_COLUMNS}"
    " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    f" %b::text[], %b::text[]) WITH ORDINALITY AS u({HISTORY_COLUMNS}, ord) ORDER BY ord"
)

_JOURNAL_STEP = (
    "WITH z AS (UPDATE zone_state SET serial = serial %% 4294967295 + 1,"
    " last_seq = last_seq + %(n)b WHERE id = 1 RETURNING serial, last_seq),"
    f" j AS (INSERT INTO journal (seq, {JOURNAL_COLUMNS})"
    " SELECT z.last_seq - %(n)b + u.ord, z.serial, %(at)b, u.code, u.old_label, u.old_ipv4,"
    " u.old_ipv6, u.old_port, u.new_label, u.ipv4, u.ipv6, u.port"
    " FROM z, unnest(%(code)b::text[], %(old_label)b::text[], %(old_ipv4)b::text[],"
    " %(old_ipv6)b::text[], %(old_port)b::integer[], %(new_label)b::text[],"
    " %(ipv4)b::text[], %(ipv6)b::text[], %(port)b::integer[]) WITH ORDINALITY"
    " AS u(code, old_label, old_ipv4, old_ipv6, old_port, new_label, ipv4, ipv6, port, ord))"
    f" SELECT z.serial, z.last_seq, pg_notify('{CHANNEL}', z.last_seq::text) FROM z"
)
"""The journal step of a commit: the serial moved once (RFC 1982: 4294967295 -> 1), the
seq range taken, the entries written and the followers notified, in one statement
under the zone_state row's lock (held to COMMIT)."""

_JOURNAL_FIELDS = (
    "code",
    "old_label",
    "old_ipv4",
    "old_ipv6",
    "old_port",
    "new_label",
    "ipv4",
    "ipv6",
    "port",
)


_WATCHDOG = Watchdog("controparte-db-watchdog")


class WatchedConnection(psycopg.Connection[Row]):
    """A connection each of whose exchanges with the server is broken off after
    `ROUND_TRIP_TIMEOUT` seconds (plus the time the exchange means to wait, for
    `notifies`): the store's operations end with a StorageUnavailableError within
    seconds even when the server is frozen, and free their thread."""

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        with _WATCHDOG.watch(self.pgconn.socket, ROUND_TRIP_TIMEOUT + (timeout or 0.0)):
            return super().wait(gen, interval, timeout)


def conninfo(url: str) -> str:
    """The libpq connection string of `url` with `CONNECT_OPTIONS` (where the URL sets
    none of its own) and `SESSION_OPTIONS` (before the URL's `options`)."""
    given = conninfo_to_dict(url)
    params: dict[str, Any] = {**CONNECT_OPTIONS, **given}
    params["options"] = " ".join(filter(None, (SESSION_OPTIONS, str(given.get("options", "")))))
    return make_conninfo("", **params)


def _reason(exc: BaseException) -> str:
    """The first line of a driver's message (libpq's carry no password)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextmanager
def failures(where: str, action: str) -> Iterator[None]:
    """Driver errors as the service's, for `action` on the database `where` (its URL
    without the password): a constraint is a ConflictError; the database out of reach,
    restarting, too slow or a deadlock a StorageUnavailableError (retry); anything else
    a StorageError."""
    try:
        yield
    except psycopg.IntegrityError as exc:
        raise ConflictError(f"the change conflicts with existing data ({_reason(exc)})") from None
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise StorageUnavailableError(
            f"{action}: the database at {where} is unavailable ({_reason(exc)}); try again later"
        ) from None
    except PoolClosed:
        raise StorageError(f"{action}: the store at {where} is closed") from None
    except psycopg.Error as exc:
        raise StorageError(f"{action}: {_reason(exc)}") from None


def _changed(inst: Installation) -> tuple[object, ...]:
    """An installation's row (`rows.values`) without the columns an update keeps: code
    and created."""
    row = rows.values(inst)
    return (*row[1:6], *row[7:])


def _columns(items: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    """Rows as columns (one array parameter each for `unnest`)."""
    return [list(column) for column in zip(*items, strict=True)] if items else [[]] * width


class _Transaction:
    """The writes (and the reads) of one PostgreSQL transaction on `conn`."""

    def __init__(self, conn: Connection, origin: Origin) -> None:
        self.conn = conn
        self._origin = origin
        self.dns_changes: list[tuple[str, Installation | None, Installation | None]] = []
        """(code, before, after) of every change to what DNS serves, in order."""
        self._held: dict[str, Installation | None] = {}
        """Prefetched (locked) installations as this transaction sees them, by the code
        in lower case (None: there is none)."""
        self._tokens: dict[str, str | None] = {}
        """The token hashes of the prefetched codes, likewise."""
        self._pending: dict[str, Installation] = {}
        """Buffered updates of prefetched installations: the row to write, by code."""
        self._history: list[Row] = []
        """Buffered history rows, in order."""

    # -- statements ---------------------------------------------------------------------

    def flush(self) -> None:
        """Write the buffered updates and history rows (before any other statement)."""
        if self._pending:
            pending = list(self._pending.values())
            self._pending.clear()
            changed = [(inst.code, *_changed(inst)[1:]) for inst in pending]  # label kept
            self.conn.execute(_UPDATE_BATCH, _columns(changed, 10))
        if self._history:
            history, self._history = self._history, []
            self.conn.execute(_HISTORY_BATCH, _columns(history, 8))

    def execute(self, sql: str, params: Sequence[object] | Mapping[str, object] = ()) -> Row | None:
        """Run one statement after the buffered writes; its first row, if any."""
        self.flush()
        cursor = self.conn.execute(sql, params)
        return cursor.fetchone() if cursor.description is not None else None

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        self.flush()
        return self.conn.execute(sql, params).fetchall()

    # -- reads --------------------------------------------------------------------------

    def get(self, code: str) -> Installation | None:
        key = code.lower()
        if key in self._held:
            return self._held[key]
        if not rows.may_be_code(code):
            return None
        row = self.execute(
            f"SELECT {COLUMNS} FROM installations WHERE code = %s FOR NO KEY UPDATE", (code,)
        )
        return None if row is None else rows.installation(row)

    def get_by_label(self, label: str) -> Installation | None:
        if not rows.may_be_label(label):
            return None
        row = self.execute(
            f"SELECT {COLUMNS} FROM installations WHERE label = %s FOR NO KEY UPDATE",
            (label.lower(),),
        )
        return None if row is None else rows.installation(row)

    def live_ports(self, released_after: datetime) -> list[PortUse]:
        self.execute(f"SELECT pg_advisory_xact_lock({LIVE_POOL_LOCK})")  # to the commit
        found = self.rows(rows.LIVE_PORTS.format(p="%s"), (rows.stamp(released_after),))
        return [rows.port_use(r) for r in found]

    def prefetch(self, codes: Iterable[str]) -> None:
        wanted = sorted({c.lower() for c in codes if rows.may_be_code(c)} - self._held.keys())
        if not wanted:
            return
        for row in self.rows(_LOCKED_BATCH, (wanted,)):
            inst = rows.installation(row[:12])
            self._held[inst.code.lower()] = inst
            self._tokens[inst.code.lower()] = None if row[12] is None else str(row[12])
        for key in wanted:
            self._held.setdefault(key, None)
            self._tokens.setdefault(key, None)

    def token_hash(self, code: str) -> str | None:
        key = code.lower()
        if key in self._tokens:
            return self._tokens[key]
        if not rows.may_be_code(code):
            return None
        row = self.execute("SELECT token_hash FROM tokens WHERE code = %s", (code,))
        return None if row is None else str(row[0])

    # -- writes -------------------------------------------------------------------------

    def _record(
        self,
        code: str,
        action: str,
        old: Installation | None,
        new: Installation | None,
        origin: Origin | None = None,
    ) -> None:
        self._history.append(rows.history_row(code, action, origin or self._origin, old, new))

    def _hold(self, code: str, inst: Installation | None) -> None:
        """What a prefetched code's installation is now (as this transaction wrote it)."""
        if code.lower() in self._held:
            self._held[code.lower()] = inst

    def insert(self, installation: Installation) -> None:
        placeholders = ", ".join(["%s"] * len(rows.values(installation)))
        added = self.execute(
            f"INSERT INTO installations ({COLUMNS}) VALUES ({placeholders})"
            " ON CONFLICT DO NOTHING RETURNING 1",
            rows.values(installation),
        )
        if added is None:  # a constraint said no; the transaction goes on (as SQLite's)
            if self.execute("SELECT 1 FROM installations WHERE code = %s", (installation.code,)):
                raise rows.code_taken(installation)
            if self.execute("SELECT 1 FROM installations WHERE label = %s", (installation.label,)):
                raise rows.label_taken(installation)
            raise rows.pair_taken(installation)
        self._hold(installation.code, installation)
        self._record(installation.code, "add", None, installation)
        self.dns_changes.append((installation.code, None, installation))

    def update(self, old: Installation, new: Installation, origin: Origin | None = None) -> None:
        key = old.code.lower()
        placed = (new.gateway, new.port) == (old.gateway, old.port)
        if key in self._held and new.label == old.label and placed:  # nothing unique changes
            self._pending[key] = new
        else:
            self.flush()
            try:
                with self.conn.transaction():  # a savepoint: a conflict leaves the rest
                    self.conn.execute(
                        "UPDATE installations SET label = %s, kind = %s, ipv4 = %s, ipv6 = %s,"
                        " port = %s, updated = %s, last_seen = %s, private_port = %s,"
                        " agent_version = %s, gateway = %s WHERE code = %s",
                        (*_changed(new), old.code),
                    )
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name == "installations_gateway_port":
                    raise rows.pair_taken(new) from None
                raise rows.label_taken(new) from None
        self._release(old, new)
        self._hold(old.code, new)
        if old.dns_view() != new.dns_view():
            self.dns_changes.append((old.code, old, new))
        if rows.audited(old) != rows.audited(new):
            self._record(old.code, "update", old, new, origin)

    def _release(self, old: Installation, new: Installation | None) -> None:
        freed = rows.released(old, new)
        if freed is not None:
            self.execute(rows.RELEASE.format(p="%s"), freed)

    def delete(self, installation: Installation) -> None:
        self.execute("DELETE FROM installations WHERE code = %s", (installation.code,))
        self._release(installation, None)
        self._hold(installation.code, None)
        self._tokens.pop(installation.code.lower(), None)
        self._record(installation.code, "remove", installation, None)
        self.dns_changes.append((installation.code, installation, None))

    def set_token_hash(self, code: str, token_hash: str) -> None:
        self.execute(
            "INSERT INTO tokens (code, token_hash, created) VALUES (%s, %s, %s)"
            " ON CONFLICT (code) DO UPDATE SET token_hash = excluded.token_hash,"
            " created = excluded.created",
            (code, token_hash, rows.now()),
        )
        if code.lower() in self._tokens:
            self._tokens[code.lower()] = token_hash
        self._record(code, "token", None, None)

    def add_admin_token(self, token_hash: str, note: str | None) -> None:
        self.execute(
            "INSERT INTO admin_tokens (token_hash, note, created) VALUES (%s, %s, %s)",
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
        if code is not None:
            self.execute("DELETE FROM tsig_keys WHERE code = %s", (code,))
            self._record(code, "tsig-key", None, None)
        self.execute(
            "INSERT INTO tsig_keys (name, code, algorithm, secret, created, role)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
            " code = excluded.code, algorithm = excluded.algorithm, secret = excluded.secret,"
            " created = excluded.created, role = excluded.role",
            (name, code, algorithm, secret, rows.now(), KeyRole(role).value),
        )

    def add_link(self, link: Link) -> bool:
        self.flush()
        try:
            with self.conn.transaction():  # a savepoint: a refusal leaves the rest
                added = self.conn.execute(
                    "INSERT INTO links (a, b, feature, created) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (a, b, feature) DO NOTHING RETURNING 1",
                    (link.a, link.b, link.feature, link.created.isoformat()),
                ).fetchone()
        except psycopg.IntegrityError as exc:
            raise ConflictError(
                f"cannot link {link.a} to {link.b}: {_reason(exc)} (does each installation exist?)"
            ) from None
        if added is None:
            return False
        self._history.extend(rows.link_history_rows("link", link, self._origin))
        return True

    def remove_link(self, a: str, b: str, feature: str | None = None) -> list[Link]:
        where = "a = %s AND b = %s" + ("" if feature is None else " AND feature = %s")
        params: tuple[str, ...] = (a, b) if feature is None else (a, b, feature)
        found = self.rows(
            f"DELETE FROM links WHERE {where} RETURNING a, b, feature, created", params
        )
        removed = sorted((rows.link(r) for r in found), key=lambda x: x.feature)
        for link in removed:
            self._history.extend(rows.link_history_rows("unlink", link, self._origin))
        return removed

    def set_firewall_seen(
        self, code: str, seen: Mapping[str, tuple[str, ...]], at: datetime
    ) -> None:
        self.execute("DELETE FROM firewall_seen WHERE code = %s", (code,))
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO firewall_seen (code, counterpart, addresses, at)"
                " VALUES (%s, %s, %s, %s)",
                rows.seen_rows(code, seen, at),
            )

    # -- the commit -----------------------------------------------------------------------

    def finish(self) -> None:
        """The last statements before COMMIT: the buffered writes, then the journal
        step (`_JOURNAL_STEP`) when what DNS serves changed. A transaction an error
        has aborted (one the caller caught) would only roll back: it fails here."""
        if self.conn.info.transaction_status == TransactionStatus.INERROR:
            raise StorageError("the change was not saved: an earlier statement failed")
        with self.conn.pipeline():  # the statements sent at once: one round trip
            self.flush()
            if not self.dns_changes:
                return
            entries = [
                rows.journal_row(0, "", code, old, new)[2:] for code, old, new in self.dns_changes
            ]
            params: dict[str, object] = dict(
                zip(_JOURNAL_FIELDS, _columns(entries, len(_JOURNAL_FIELDS)), strict=True)
            )
            params.update(n=len(entries), at=rows.now())
            self.conn.execute(_JOURNAL_STEP, params)


class PostgresStore(Reads, Relays, Guards, Accounts, Results):
    """`Store` on a PostgreSQL database (`url`: postgresql://...), shared by any number
    of processes and nodes."""

    PLACEHOLDER = "%s"
    NO_LIMIT = None
    RELAY_LOCK = f"SELECT pg_advisory_xact_lock({RELAY_LOCK_CLASS}, hashtext(%s))"
    TSIG_LOCK = f"SELECT pg_advisory_xact_lock({TSIG_LOCK_CLASS}, hashtext(%s))"
    LIKE = "ILIKE"

    def __init__(
        self, url: str, *, pool_size: int = POOL_SIZE, timeout: float = POOL_TIMEOUT
    ) -> None:
        self.where = redacted_database(url)
        self._conninfo = conninfo(url)
        self._local = threading.local()  # .tx: this thread's open transaction
        self._timeout = timeout
        with self._failures("cannot open the store"):
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                migrate_postgres(conn, self.where)
            self._pool: ConnectionPool[WatchedConnection] = ConnectionPool(
                self._conninfo,
                connection_class=WatchedConnection,
                min_size=1,
                max_size=pool_size,
                kwargs={"autocommit": True},
                timeout=timeout,
                reconnect_timeout=RECONNECT_GIVE_UP,
                name="controparte",
                open=False,
            )
            self._pool.open(wait=False)

    # -- errors -----------------------------------------------------------------------

    def _failures(self, action: str) -> AbstractContextManager[None]:
        return failures(self.where, action)

    def _retrying(self, action: str, work: Callable[[], T]) -> T:
        """`work` (one whole transaction) run again when a deadlock ended it."""
        with self._failures(action):
            for attempt in range(1, RETRIES + 1):
                try:
                    return work()
                except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                    if attempt == RETRIES:
                        raise
                    log.info("%s: deadlock, attempt %d of %d", action, attempt + 1, RETRIES)
        raise AssertionError("unreachable")

    # -- connections ------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[WatchedConnection]:
        """A pooled connection that has just answered an empty query, returned to the
        pool at the end (a broken one is replaced by the pool)."""
        conn = self._lend()
        try:
            with conn:
                yield conn
        finally:
            self._pool.putconn(conn)

    def _lend(self) -> WatchedConnection:
        """The pool's next connection that answers an empty query, within the store's
        timeout (PoolTimeout after it). A dead one goes back to the pool, which
        discards it and opens another, and the next one is drawn at once: after the
        server restarted every idle connection is dead, and the pool's own check pauses
        1 s, then 2 s, ... between two failed ones, so a caller drawing them in turn
        would wait seconds while callers arriving later got fresh connections."""
        deadline = time.monotonic() + self._timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PoolTimeout(f"no working connection after {self._timeout:.2f} sec")
            conn = self._pool.getconn(timeout=left)
            try:
                ConnectionPool.check_connection(conn)
            except psycopg.Error:
                self._pool.putconn(conn)
                continue
            except BaseException:
                self._pool.putconn(conn)
                raise
            return conn

    # -- writes -----------------------------------------------------------------------

    def _bound(self) -> _Transaction | None:
        """This thread's open transaction, if any."""
        tx: _Transaction | None = getattr(self._local, "tx", None)
        return tx

    @contextmanager
    def _transaction(self, origin: Origin) -> Iterator[_Transaction]:
        if self._bound() is not None:
            raise StorageError("a store transaction is already open in this thread")
        with self._connection() as conn, conn.transaction():
            tx = _Transaction(conn, origin)
            self._local.tx = tx
            try:
                yield tx
                tx.finish()
            finally:
                self._local.tx = None

    @contextmanager
    def transaction(self, origin: Origin) -> Iterator[_Transaction]:
        with self._failures("the change was not saved"), self._transaction(origin) as tx:
            yield tx

    # -- reads ------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Every row of one query: inside this thread's transaction, on its connection;
        else on a pooled one, in autocommit."""
        with self._failures("cannot read the store"):
            tx = self._bound()
            if tx is not None:
                return tx.rows(sql, params)
            with self._connection() as conn:
                return conn.execute(sql, params).fetchall()

    @contextmanager
    def _view(self) -> Iterator[Connection]:
        """A connection reading one consistent view (REPEATABLE READ, READ ONLY); inside
        this thread's transaction, that transaction's."""
        tx = self._bound()
        if tx is not None:
            tx.flush()
            yield tx.conn
            return
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def get(self, code: str) -> Installation | None:
        tx = self._bound()
        if tx is None:
            return super().get(code)
        with self._failures("cannot read the store"):
            return tx.get(code)

    def get_by_label(self, label: str) -> Installation | None:
        tx = self._bound()
        if tx is None:
            return super().get_by_label(label)
        with self._failures("cannot read the store"):
            return tx.get_by_label(label)

    def token_hash(self, code: str) -> str | None:
        tx = self._bound()
        if tx is None:
            return super().token_hash(code)
        with self._failures("cannot read the store"):
            return tx.token_hash(code)

    def last_seq(self) -> int:
        return self._int("SELECT last_seq FROM zone_state WHERE id = 1")

    def journal_reach(self, serial: int) -> int | None:
        with self._failures("cannot read the store"), self._view() as conn:
            floor = conn.execute(
                "SELECT floor_seq, floor_serial FROM zone_state WHERE id = 1"
            ).fetchone()
            if floor is None:
                raise StorageError(f"the store at {self.where} has no zone state")
            found = conn.execute(
                "SELECT max(seq) FROM journal WHERE serial = %s AND seq > %s",
                (serial, floor[0]),
            ).fetchone()
        if found is not None and found[0] is not None:
            return int(found[0])
        return int(floor[0]) if int(floor[1]) == serial else None

    def adopt_zone_config(self, fingerprint: str) -> bool:
        def adopt() -> bool:
            with self._transaction(Origin(actor="controparte", via="zone-config")) as tx:
                row = tx.execute(
                    "SELECT zone_config FROM zone_state WHERE id = 1 FOR UPDATE"
                )  # nodes starting together: the second sees the first's fingerprint
                recorded = None if row is None else row[0]
                if recorded == fingerprint:
                    return False
                if recorded is None:  # the first configuration this store serves
                    tx.execute(
                        "UPDATE zone_state SET zone_config = %s WHERE id = 1", (fingerprint,)
                    )
                    return False
                tx.execute(
                    "UPDATE zone_state SET serial = serial %% 4294967295 + 1,"
                    " floor_seq = last_seq, floor_serial = serial %% 4294967295 + 1,"
                    " zone_config = %s WHERE id = 1",
                    (fingerprint,),
                )
                return True

        return self._retrying("cannot record the zone configuration", adopt)

    def adopt_secret_fingerprint(self, fingerprint: str) -> str:
        recorded = self._secret_fingerprint()
        if recorded is not None:
            return recorded

        def adopt() -> str:
            with self._transaction(Origin(actor="controparte", via="server-secret")) as tx:
                row = tx.execute(ADOPT_FINGERPRINT.format(p=self.PLACEHOLDER), (fingerprint,))
                return str(None if row is None else row[0])

        return self._retrying("cannot record the server secret's fingerprint", adopt)

    def prune_journal(self, keep_entries: int, keep_seconds: float, now: datetime) -> int:
        cutoff = rows.stamp(now - timedelta(seconds=keep_seconds))

        def prune() -> int:
            with self._transaction(Origin(actor="controparte", via="prune")) as tx:
                turn = tx.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK,))
                if turn is None or not turn[0]:
                    return 0  # another node is pruning now
                state = tx.execute("SELECT last_seq FROM zone_state WHERE id = 1")
                by_age = tx.execute("SELECT max(seq) FROM journal WHERE at < %s", (cutoff,))
                upto = max(
                    0 if state is None else int(state[0]) - keep_entries,
                    0 if by_age is None or by_age[0] is None else int(by_age[0]),
                )
                if upto <= 0:
                    return 0
                # Whole serials: up to the last entry of the transaction of entry `upto`.
                row = tx.execute(
                    "SELECT serial, (SELECT max(seq) FROM journal j2 WHERE j2.serial = j1.serial"
                    " AND j2.seq >= j1.seq) FROM journal j1 WHERE seq <= %s ORDER BY seq DESC"
                    " LIMIT 1",
                    (upto,),
                )
                if row is None:
                    return 0
                floor_serial, floor_seq = int(row[0]), int(row[1])
                removed = tx.conn.execute("DELETE FROM journal WHERE seq <= %s", (floor_seq,))
                tx.execute(  # never below a floor a new zone configuration set meanwhile
                    "UPDATE zone_state SET floor_seq = %s, floor_serial = %s"
                    " WHERE id = 1 AND floor_seq < %s",
                    (floor_seq, floor_serial, floor_seq),
                )
                return removed.rowcount

        return self._retrying("cannot prune the journal", prune)

    def _write(self, work: Callable[[Runner], T]) -> T:
        def once() -> T:
            with self._transaction(Origin(actor="controparte", via="store")) as tx:

                def run(sql: str, params: Sequence[object]) -> list[Row]:
                    cursor = tx.conn.execute(sql, params)
                    return cursor.fetchall() if cursor.description is not None else []

                return work(run)

        return self._retrying("cannot write to the store", once)

    def dns_snapshot(self, consume: Callable[[Iterable[DnsRecord]], T]) -> tuple[int, int, T]:
        with self._failures("cannot read the store"), self._view() as conn:
            state = conn.execute("SELECT serial, last_seq FROM zone_state WHERE id = 1").fetchone()
            if state is None:
                raise StorageError(f"the store at {self.where} has no zone state")
            stream = conn.cursor().stream(
                "SELECT label, ipv4, ipv6, port FROM installations", size=10_000
            )
            try:
                result = consume(map(rows.record, stream))
            finally:
                stream.close()  # type: ignore[attr-defined]  # a generator: ends the query
        return int(state[0]), int(state[1]), result

    def change_listener(self) -> PgChangeListener:
        return PgChangeListener(self._conninfo)

    def close(self) -> None:
        """Close the pool's connections; an operation after this raises StorageError."""
        self._pool.close()


class PgChangeListener:
    """`ChangeListener` on a connection of its own (outside the pool: LISTEN belongs to
    a session), in autocommit (a listener inside a transaction would hold back the
    server's notification queue). It connects on the first `wait`, and again after a
    drop, with a growing pause (`LISTEN_BACKOFF`); each time it LISTENs first and then
    reports the connection, so that the follower's read after it misses nothing.
    While it waits with nothing to read for `PROBE_AFTER` seconds it sends an empty
    query, so that a server that vanished is noticed (the connection's timeouts)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # held by `wait`
        self._closing = threading.Event()
        self._pause = LISTEN_BACKOFF[0]
        self._retry_at = 0.0
        self._active = 0.0  # when the connection last carried something
        self.connects = 0
        """Connections made (the first one and every reconnection), for metrics."""

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closing.is_set():
                return False
            if self._conn is None:
                return self._connect(deadline)
            conn = self._conn
            try:
                woken = bool(list(conn.notifies(timeout=timeout, stop_after=1)))
                if woken:
                    list(conn.notifies(timeout=0))  # and any others already here
                    self._active = time.monotonic()
                elif time.monotonic() - self._active >= PROBE_AFTER:
                    conn.execute("")
                    self._active = time.monotonic()
            except psycopg.Error as exc:
                self._drop(exc)
                return False
            return woken

    def _connect(self, deadline: float) -> bool:
        """Connect and LISTEN, after the pause since the last failure (within the
        deadline); whether it listens now."""
        pause = min(self._retry_at, deadline) - time.monotonic()
        if pause > 0 and self._closing.wait(pause):
            return False
        if time.monotonic() < self._retry_at:
            return False
        try:
            conn = WatchedConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            self._failed(exc)
            return False
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            conn.close()
            self._failed(exc)
            return False
        self._conn = conn
        self._active = time.monotonic()
        self._pause = LISTEN_BACKOFF[0]
        self.connects += 1
        if self.connects > 1:
            log.info("listening for journal changes again")
        return True

    def _failed(self, exc: psycopg.Error) -> None:
        if not self._closing.is_set():
            log.warning("cannot listen for journal changes: %s", _reason(exc))
        self._retry_at = time.monotonic() + self._pause
        self._pause = min(self._pause * 2, LISTEN_BACKOFF[1])

    def _drop(self, exc: psycopg.Error) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._failed(exc)

    def close(self) -> None:
        self._closing.set()
        conn = self._conn
        if conn is not None:  # wake a `wait` in progress: its socket reads end of file
            with contextlib.suppress(psycopg.Error):
                shut_down(conn.pgconn.socket)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

"""Moving a registry from its SQLite file to a PostgreSQL database (`controparte migrate
--to`): every row of every table, as stored, and the zone's state, so that the service
goes on where it stood.

Contracts of `sqlite_to_postgres`:
- The SQLite file is only read: opened read-only, all of it in one read transaction (one
  consistent view, even while a server still writes to it). A file of an older schema
  version is brought to the newest in a copy in memory, never in the file.
- Everything happens in one PostgreSQL transaction: the target's schema is brought to the
  newest version, the target is checked to hold no registry (any row in any table but
  the zone's state: else ConfigError), every table is copied with COPY (codes, tokens'
  hashes, TSIG secrets still encrypted, history and journal ids kept), the zone's state
  is carried (serial, the journal's floor and last seq, the fingerprints of the zone
  configuration and of the server secret; a source of a version before the latter gets
  the one given, its data directory's) and the copy is checked: rows per table and the
  zone's state equal on both sides (else StorageError). Any failure rolls it all back:
  the target is left as it was. The tables are locked meanwhile: a node already on the
  target waits (or fails after its `lock_timeout`), never sees or writes a part.
- What is carried keeps its meaning: the next change on PostgreSQL gets the next serial
  (RFC 1982) and the next seq, and a secondary at a serial the journal reaches gets an
  incremental transfer (the entries keep their before-images), one behind the floor the
  whole zone, as before the move.
- Nothing secret is decrypted or shown: rows are copied as stored, and the target is
  named by its URL without the password.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from controparte.errors import ConfigError, StorageError
from controparte.settings import redacted_database
from controparte.store.postgres import conninfo, failures
from controparte.store.schema import MIGRATIONS, migrate, migrate_postgres
from controparte.store.sqlite import LAST_SEQ

TABLES = (
    "installations",
    "tokens",
    "tsig_keys",
    "links",
    "firewall_seen",
    "relay_requests",
    "relay_polls",
    "tsig_seen",
    "auth_failures",
    "flow_results",
    "admin_tokens",
    "live_released",
    "accounts",
    "sessions",
    "history",
    "journal",
)
"""The tables copied row for row, each after the tables it refers to; the one row of
`zone_state` is carried apart (PostgreSQL keeps the last seq in it)."""

IDENTITIES = ("admin_tokens", "history", "flow_results")
"""Tables whose `id` PostgreSQL hands out (an identity column): after the copy it goes
on after the highest id copied."""

_ZONE_STATE = (
    "SELECT serial, floor_seq, floor_serial, zone_config, secret_fingerprint"
    " FROM zone_state WHERE id = 1"
)


@dataclass(frozen=True, slots=True)
class ZoneState:
    """Where the zone stands: its serial, the last journal seq handed out, the journal's
    floor (every change after `floor_seq` is kept; the zone stood at `floor_serial`
    there), the fingerprint of the zone configuration last served and that of the
    server secret the credentials are made with."""

    serial: int
    last_seq: int
    floor_seq: int
    floor_serial: int
    zone_config: str | None
    secret_fingerprint: str | None


@dataclass(frozen=True, slots=True)
class Migrated:
    """What `sqlite_to_postgres` carried: the rows of each table (as many on both sides,
    checked before the commit), the zone's state (the same on both sides), where to
    (the URL without its password) and how long it took."""

    rows: Mapping[str, int]
    zone: ZoneState
    target: str
    seconds: float


def sqlite_to_postgres(source: Path, url: str, secret_fingerprint: str) -> Migrated:
    """Copy the SQLite registry at `source` into the PostgreSQL database at `url`, which
    must hold none (see the module); `secret_fingerprint` (that of `source`'s data
    directory's server secret) is recorded when `source` has none recorded (a registry
    of an older version, whose credentials were made with that secret). Raises
    ConfigError when `source` is no registry or the target holds one,
    StorageUnavailableError when the target cannot be reached (within seconds),
    StorageError when anything else fails; the target is unchanged then."""
    started = time.monotonic()
    target = redacted_database(url)
    with _reading(source) as lite:
        counts = {table: _count(lite, table) for table in TABLES}
        zone = _sqlite_zone(lite, secret_fingerprint)
        with (
            failures(target, "cannot migrate the registry"),
            psycopg.connect(conninfo(url), autocommit=True) as conn,
            conn.transaction(),
        ):
            migrate_postgres(conn, target)
            conn.execute(f"LOCK TABLE {', '.join(TABLES)}, zone_state IN ACCESS EXCLUSIVE MODE")
            held = {table: n for table, n in _pg_counts(conn).items() if n}
            if held:
                found = ", ".join(f"{table}: {n}" for table, n in held.items())
                raise ConfigError(
                    f"the database at {target} already holds a registry ({found}): a"
                    " registry moves into an empty database only; nothing was changed"
                )
            _copy_all(lite, conn, source)
            conn.execute(
                "UPDATE zone_state SET serial = %s, last_seq = %s, floor_seq = %s,"
                " floor_serial = %s, zone_config = %s, secret_fingerprint = %s WHERE id = 1",
                (
                    zone.serial,
                    zone.last_seq,
                    zone.floor_seq,
                    zone.floor_serial,
                    zone.zone_config,
                    zone.secret_fingerprint,
                ),
            )
            copied, read_back = _pg_counts(conn), _pg_zone(conn)
            if copied != counts or read_back != zone:
                raise StorageError(
                    f"the copy at {target} differs from the registry at {source} (rows"
                    f" {copied} against {counts}; {read_back} against {zone});"
                    " nothing was changed"
                )
    return Migrated(counts, zone, target, time.monotonic() - started)


# -- the source -------------------------------------------------------------------------


@contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """The registry at `path` at the newest schema version, read in one transaction
    through a read-only connection (another version: a copy in memory, migrated, or
    refused when newer)."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the registry at {path}: {exc}") from None
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            raise ConfigError(f"data: {path} is not a controparte registry")
        if version != len(MIGRATIONS):
            memory = sqlite3.connect(":memory:", isolation_level=None)
            conn.backup(memory)  # in one step: one consistent copy
            conn.close()
            conn = memory
            migrate(conn, path)
        conn.execute("BEGIN")  # one view of every table
        yield conn
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the registry at {path}: {exc}") from None
    finally:
        conn.close()


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _sqlite_zone(conn: sqlite3.Connection, secret_fingerprint: str) -> ZoneState:
    """The zone's state in the source; its server secret's fingerprint, or
    `secret_fingerprint` when none is recorded."""
    serial, floor_seq, floor_serial, zone_config, recorded = conn.execute(_ZONE_STATE).fetchone()
    last_seq = int(conn.execute(LAST_SEQ).fetchone()[0])
    return ZoneState(
        int(serial),
        last_seq,
        int(floor_seq),
        int(floor_serial),
        zone_config,
        secret_fingerprint if recorded is None else recorded,
    )


# -- the target -------------------------------------------------------------------------

Connection = psycopg.Connection[tuple[object, ...]]


def _copy_all(lite: sqlite3.Connection, conn: Connection, source: Path) -> None:
    """Every row of every table (`TABLES`), every column as the source names it (both
    engines name them alike), as stored; identities go on after the ids copied.

    The foreign keys among the tables are dropped for the copy and added back after it,
    as they were (`pg_get_constraintdef`): added back, each is checked in one join,
    where a check per row copied would cost more than the copy of its table."""
    references = conn.execute(
        "SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid)"
        " FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY(%s::regclass[])",
        (list(TABLES),),
    ).fetchall()
    for table, name, _definition in references:
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    try:
        for table in TABLES:
            columns = ", ".join(str(c[1]) for c in lite.execute(f"PRAGMA table_info({table})"))
            rows = lite.execute(f"SELECT {columns} FROM {table}")
            rows.arraysize = 10_000
            with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                while batch := rows.fetchmany():
                    for row in batch:
                        copy.write_row(row)
        for table, name, definition in references:
            conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    except psycopg.IntegrityError as exc:  # a row the source's own constraints let by
        raise StorageError(
            f"the registry at {source} holds a row PostgreSQL refuses"
            f" ({str(exc).strip().splitlines()[0]}); nothing was changed"
        ) from None
    for table in IDENTITIES:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            " HAVING max(id) IS NOT NULL"
        )


def _pg_counts(conn: Connection) -> dict[str, int]:
    """The rows of each table of `TABLES` on the target."""
    found = {}
    for table in TABLES:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        found[table] = 0 if row is None else int(str(row[0]))
    return found


def _pg_zone(conn: Connection) -> ZoneState | None:
    row = conn.execute(
        "SELECT serial, last_seq, floor_seq, floor_serial, zone_config, secret_fingerprint"
        " FROM zone_state WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    serial, last_seq, floor_seq, floor_serial, zone_config, secret_fingerprint = row
    return ZoneState(
        int(str(serial)),
        int(str(last_seq)),
        int(str(floor_seq)),
        int(str(floor_serial)),
        None if zone_config is None else str(zone_config),
        None if secret_fingerprint is None else str(secret_fingerprint),
    )

"""The schema: its versions, applied in order (`MIGRATIONS`), each written for both
engines, and the runners that bring a database up to the newest (`migrate` for SQLite,
`migrate_postgres` for PostgreSQL). Version N is the same tables and columns on both.

SQLite counts the versions applied in `PRAGMA user_version`; PostgreSQL in the one row
of `schema_version`, and migrates under an advisory lock, so that nodes starting at once
take turns (DDL is transactional there: a version is applied whole or not at all).

How the engines differ, on purpose:
- codes compare in any case: SQLite `COLLATE NOCASE`, PostgreSQL `citext COLLATE "C"`
  (the same order as NOCASE, whatever the database's locale), on the installation's
  code and on every column that refers to it;
- the journal's sequence numbers: SQLite's AUTOINCREMENT counter (kept in
  `sqlite_sequence`), PostgreSQL's `zone_state.last_seq`, taken with the serial in one
  statement under the zone's row lock, so that they grow in commit order;
- `history.id` and `admin_tokens.id`: AUTOINCREMENT / an identity column; `BLOB` /
  `bytea`; text compared or ordered by its bytes is `COLLATE "C"` on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from controparte.errors import StorageError

if TYPE_CHECKING:
    import psycopg


class Migration(NamedTuple):
    """One schema version, as each engine writes it."""

    sqlite: str
    postgres: str


_CODE_OF_INSTALLATION = (
    "COLLATE NOCASE REFERENCES installations (code) ON DELETE CASCADE ON UPDATE CASCADE"
)
"""The constraints of a column that holds an installation's code: compared as codes are
(any case), renamed with the installation and deleted with it."""

_PG_CODE = 'citext COLLATE "C"'
"""An installation's code on PostgreSQL: compared in any case, ordered as SQLite's
NOCASE orders it."""

_PG_CODE_OF_INSTALLATION = (
    f"{_PG_CODE} REFERENCES installations (code) ON DELETE CASCADE ON UPDATE CASCADE"
)

MIGRATIONS: tuple[Migration, ...] = (
    # 1: the registry, the zone serial, the DNS change journal and the audit history.
    Migration(
        sqlite="""
        CREATE TABLE installations (
            code      TEXT PRIMARY KEY COLLATE NOCASE,
            label     TEXT NOT NULL UNIQUE,
            kind      TEXT NOT NULL CHECK (kind IN ('onprem', 'live')),
            ipv4      TEXT,
            ipv6      TEXT,
            port      INTEGER CHECK (port BETWEEN 1 AND 65535),
            created   TEXT NOT NULL,
            updated   TEXT NOT NULL,
            last_seen TEXT
        );
        CREATE TABLE zone_state (
            id     INTEGER PRIMARY KEY CHECK (id = 1),
            serial INTEGER NOT NULL
        );
        CREATE TABLE journal (
            seq       INTEGER PRIMARY KEY AUTOINCREMENT,
            serial    INTEGER NOT NULL,
            at        TEXT NOT NULL,
            code      TEXT NOT NULL,
            old_label TEXT,
            new_label TEXT,
            ipv4      TEXT,
            ipv6      TEXT,
            port      INTEGER
        );
        CREATE TABLE history (
            id     INTEGER PRIMARY KEY AUTOINCREMENT,
            at     TEXT NOT NULL,
            code   TEXT NOT NULL,
            action TEXT NOT NULL,
            actor  TEXT NOT NULL,
            via    TEXT NOT NULL,
            source TEXT,
            old    TEXT,
            new    TEXT
        );
        CREATE INDEX history_by_code ON history (code, id);
        """,
        postgres="""
        CREATE EXTENSION IF NOT EXISTS citext;
        CREATE TABLE installations (
            code      citext COLLATE "C" PRIMARY KEY,
            label     text NOT NULL UNIQUE,
            kind      text NOT NULL CHECK (kind IN ('onprem', 'live')),
            ipv4      text,
            ipv6      text,
            port      integer CHECK (port BETWEEN 1 AND 65535),
            created   text NOT NULL,
            updated   text NOT NULL,
            last_seen text
        );
        CREATE TABLE zone_state (
            id       integer PRIMARY KEY CHECK (id = 1),
            serial   bigint NOT NULL,
            last_seq bigint NOT NULL DEFAULT 0
        );
        CREATE TABLE journal (
            seq       bigint PRIMARY KEY,
            serial    bigint NOT NULL,
            at        text COLLATE "C" NOT NULL,
            code      text NOT NULL,
            old_label text,
            new_label text,
            ipv4      text,
            ipv6      text,
            port      integer
        );
        CREATE TABLE history (
            id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at     text NOT NULL,
            code   text NOT NULL,
            action text NOT NULL,
            actor  text NOT NULL,
            via    text NOT NULL,
            source text,
            old    text,
            new    text
        );
        CREATE INDEX history_by_code ON history (code, id);
        """,
    ),
    # 2: credentials. Token hashes (HMAC-SHA-256), admin token hashes, TSIG keys
    # (secrets encrypted; code NULL = an admin key that may change any installation).
    Migration(
        sqlite=f"""
        CREATE TABLE tokens (
            code       TEXT PRIMARY KEY {_CODE_OF_INSTALLATION},
            token_hash TEXT NOT NULL,
            created    TEXT NOT NULL
        );
        CREATE TABLE admin_tokens (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            token_hash TEXT NOT NULL UNIQUE,
            note       TEXT,
            created    TEXT NOT NULL
        );
        CREATE TABLE tsig_keys (
            name      TEXT PRIMARY KEY,
            code      TEXT {_CODE_OF_INSTALLATION},
            algorithm TEXT NOT NULL,
            secret    BLOB NOT NULL,
            created   TEXT NOT NULL
        );
        CREATE INDEX tsig_keys_by_code ON tsig_keys (code);
        ALTER TABLE installations ADD COLUMN private_port INTEGER
            CHECK (private_port BETWEEN 1 AND 65535);
        ALTER TABLE installations ADD COLUMN agent_version TEXT;
        """,
        postgres=f"""
        CREATE TABLE tokens (
            code       {_PG_CODE_OF_INSTALLATION} PRIMARY KEY,
            token_hash text NOT NULL,
            created    text NOT NULL
        );
        CREATE TABLE admin_tokens (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            token_hash text NOT NULL UNIQUE,
            note       text,
            created    text NOT NULL
        );
        CREATE TABLE tsig_keys (
            name      text PRIMARY KEY,
            code      {_PG_CODE_OF_INSTALLATION},
            algorithm text NOT NULL,
            secret    bytea NOT NULL,
            created   text NOT NULL
        );
        CREATE INDEX tsig_keys_by_code ON tsig_keys (code);
        ALTER TABLE installations ADD COLUMN private_port integer
            CHECK (private_port BETWEEN 1 AND 65535);
        ALTER TABLE installations ADD COLUMN agent_version text;
        """,
    ),
    # 3: counterpart links (a calls b for a feature) and, per installation and
    # counterpart, the public addresses `controparte firewall` saw on its last run.
    Migration(
        sqlite=f"""
        CREATE TABLE links (
            a       TEXT NOT NULL {_CODE_OF_INSTALLATION},
            b       TEXT NOT NULL {_CODE_OF_INSTALLATION},
            feature TEXT NOT NULL,
            created TEXT NOT NULL,
            UNIQUE (a, b, feature),
            CHECK (a <> b)
        );
        CREATE INDEX links_by_b ON links (b);
        CREATE TABLE firewall_seen (
            code        TEXT NOT NULL {_CODE_OF_INSTALLATION},
            counterpart TEXT NOT NULL {_CODE_OF_INSTALLATION},
            addresses   TEXT NOT NULL,
            at          TEXT NOT NULL,
            PRIMARY KEY (code, counterpart)
        );
        """,
        postgres=f"""
        CREATE TABLE links (
            a       {_PG_CODE_OF_INSTALLATION} NOT NULL,
            b       {_PG_CODE_OF_INSTALLATION} NOT NULL,
            feature text COLLATE "C" NOT NULL,
            created text NOT NULL,
            UNIQUE (a, b, feature),
            CHECK (a <> b)
        );
        CREATE INDEX links_by_b ON links (b);
        CREATE TABLE firewall_seen (
            code        {_PG_CODE_OF_INSTALLATION} NOT NULL,
            counterpart {_PG_CODE_OF_INSTALLATION} NOT NULL,
            addresses   text NOT NULL,
            at          text NOT NULL,
            PRIMARY KEY (code, counterpart)
        );
        """,
    ),
    # 4: zone transfer. Each journal row also keeps what was served before the change
    # (the before-image), so that an IXFR can name what to delete; `zone_state` keeps
    # the journal's floor: every change after `floor_seq` is in the journal, and the
    # zone stood at `floor_serial` there (older rows are pruned, and rows written before
    # this version have no before-image, so the floor starts at the newest row). TSIG
    # keys gain a role: a key signs updates or transfers, never both. `zone_config` is
    # the fingerprint of the zone configuration last served (SOA fields, NS, glue).
    Migration(
        sqlite="""
        ALTER TABLE journal ADD COLUMN old_ipv4 TEXT;
        ALTER TABLE journal ADD COLUMN old_ipv6 TEXT;
        ALTER TABLE journal ADD COLUMN old_port INTEGER;
        CREATE INDEX journal_by_serial ON journal (serial, seq);
        CREATE INDEX journal_by_at ON journal (at);
        ALTER TABLE zone_state ADD COLUMN floor_seq INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE zone_state ADD COLUMN floor_serial INTEGER NOT NULL DEFAULT 0;
        UPDATE zone_state SET floor_seq = (SELECT coalesce(max(seq), 0) FROM journal),
            floor_serial = serial;
        ALTER TABLE tsig_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'update'
            CHECK (role IN ('update', 'transfer'));
        ALTER TABLE zone_state ADD COLUMN zone_config TEXT;
        """,
        postgres="""
        ALTER TABLE journal ADD COLUMN old_ipv4 text;
        ALTER TABLE journal ADD COLUMN old_ipv6 text;
        ALTER TABLE journal ADD COLUMN old_port integer;
        CREATE INDEX journal_by_serial ON journal (serial, seq);
        CREATE INDEX journal_by_at ON journal (at);
        ALTER TABLE zone_state ADD COLUMN floor_seq bigint NOT NULL DEFAULT 0;
        ALTER TABLE zone_state ADD COLUMN floor_serial bigint NOT NULL DEFAULT 0;
        UPDATE zone_state SET floor_seq = last_seq, floor_serial = serial;
        ALTER TABLE tsig_keys ADD COLUMN role text NOT NULL DEFAULT 'update'
            CHECK (role IN ('update', 'transfer'));
        ALTER TABLE zone_state ADD COLUMN zone_config text;
        """,
    ),
    # 5: the fingerprint of the server secret that token hashes and TSIG secrets are
    # made with (`ServerSecret.fingerprint`), so that a node with another secret is
    # refused at start; recorded by the first node that opens the services (NULL until
    # then, also in a store of an older version: its credentials are that node's).
    Migration(
        sqlite="ALTER TABLE zone_state ADD COLUMN secret_fingerprint TEXT;",
        postgres="ALTER TABLE zone_state ADD COLUMN secret_fingerprint text;",
    ),
    # 6: the relay (`service/relay.py`): dial requests one installation (the requester)
    # asks the agent of a linked one (the agent) to make to the requester's registered
    # public address and port, and when each agent last asked for its requests. Rows
    # live about two minutes (purged as new requests come); stamps are `rows.stamp`
    # text, compared as text.
    Migration(
        sqlite=f"""
        CREATE TABLE relay_requests (
            id        TEXT PRIMARY KEY,
            requester TEXT NOT NULL {_CODE_OF_INSTALLATION},
            agent     TEXT NOT NULL {_CODE_OF_INSTALLATION},
            address   TEXT NOT NULL,
            port      INTEGER NOT NULL,
            nonce     TEXT NOT NULL,
            created   TEXT NOT NULL,
            expires   TEXT NOT NULL,
            claimed   TEXT,
            report    TEXT,
            finished  TEXT
        );
        CREATE INDEX relay_requests_by_agent ON relay_requests (agent, expires);
        CREATE TABLE relay_polls (
            code TEXT PRIMARY KEY {_CODE_OF_INSTALLATION},
            at   TEXT NOT NULL
        );
        """,
        postgres=f"""
        CREATE TABLE relay_requests (
            id        text COLLATE "C" PRIMARY KEY,
            requester {_PG_CODE_OF_INSTALLATION} NOT NULL,
            agent     {_PG_CODE_OF_INSTALLATION} NOT NULL,
            address   text NOT NULL,
            port      integer NOT NULL,
            nonce     text NOT NULL,
            created   text COLLATE "C" NOT NULL,
            expires   text COLLATE "C" NOT NULL,
            claimed   text COLLATE "C",
            report    text,
            finished  text COLLATE "C"
        );
        CREATE INDEX relay_requests_by_agent ON relay_requests (agent, expires);
        CREATE TABLE relay_polls (
            code {_PG_CODE_OF_INSTALLATION} PRIMARY KEY,
            at   text COLLATE "C" NOT NULL
        );
        """,
    ),
    # 7: what must hold across restarts, processes and nodes (`store/guards.py`): the
    # TSIG requests accepted (`tsig_seen`: the MAC of each UPDATE verified, so that its
    # bytes replayed are refused, kept until its Time Signed plus Fudge has passed), and
    # the failed-authentication throttle (`auth_failures`: per client address, and per
    # address and claimed installation; `claim` '' is the whole address). Times are
    # seconds since the epoch.
    Migration(
        sqlite="""
        CREATE TABLE tsig_seen (
            key_name    TEXT NOT NULL,
            mac         BLOB NOT NULL,
            time_signed INTEGER NOT NULL,
            expires     REAL NOT NULL,
            PRIMARY KEY (key_name, mac)
        );
        CREATE INDEX tsig_seen_by_expires ON tsig_seen (expires);
        CREATE TABLE auth_failures (
            address       TEXT NOT NULL,
            claim         TEXT NOT NULL,
            window_start  REAL NOT NULL,
            failures      INTEGER NOT NULL,
            blocked_until REAL NOT NULL,
            PRIMARY KEY (address, claim)
        );
        """,
        postgres="""
        CREATE TABLE tsig_seen (
            key_name    text COLLATE "C" NOT NULL,
            mac         bytea NOT NULL,
            time_signed bigint NOT NULL,
            expires     double precision NOT NULL,
            PRIMARY KEY (key_name, mac)
        );
        CREATE INDEX tsig_seen_by_expires ON tsig_seen (expires);
        CREATE TABLE auth_failures (
            address       text COLLATE "C" NOT NULL,
            claim         text COLLATE "C" NOT NULL,
            window_start  double precision NOT NULL,
            failures      integer NOT NULL,
            blocked_until double precision NOT NULL,
            PRIMARY KEY (address, claim)
        );
        """,
    ),
    # 8: the Live port pool (`service/livepool.py`). An installation placed on a Live
    # gateway names it in `gateway`; its `port` is the one allocated there, and the
    # unique index makes the database refuse a second installation on the same
    # (gateway, port), whatever process or node writes it (NULLs are distinct: an
    # installation on no gateway takes no pair). `live_released` keeps when each pair
    # was last freed (a removal, a move), for the quarantine.
    Migration(
        sqlite="""
        ALTER TABLE installations ADD COLUMN gateway TEXT;
        CREATE UNIQUE INDEX installations_gateway_port ON installations (gateway, port);
        CREATE TABLE live_released (
            gateway  TEXT NOT NULL,
            port     INTEGER NOT NULL,
            released TEXT NOT NULL,
            PRIMARY KEY (gateway, port)
        );
        """,
        postgres="""
        ALTER TABLE installations ADD COLUMN gateway text COLLATE "C";
        CREATE UNIQUE INDEX installations_gateway_port ON installations (gateway, port);
        CREATE TABLE live_released (
            gateway  text COLLATE "C" NOT NULL,
            port     integer NOT NULL,
            released text COLLATE "C" NOT NULL,
            PRIMARY KEY (gateway, port)
        );
        """,
    ),
    # 9: the dashboard (`web/`, `store/accounts.py`): its accounts (an operator may
    # change, a support account only look; the password as `service/accounts.py`
    # hashes it) and its sessions (the SHA-256 of the cookie's value, never the value;
    # the account's name and role as they were at sign-in, "admin" for an admin token;
    # the form token of the session). The installations' list filters by kind and by
    # last_seen: an index each, so that a page of 100,000 stays fast.
    Migration(
        sqlite="""
        CREATE TABLE accounts (
            name          TEXT PRIMARY KEY,
            role          TEXT NOT NULL CHECK (role IN ('operator', 'support')),
            password_hash TEXT NOT NULL,
            created       TEXT NOT NULL
        );
        CREATE TABLE sessions (
            key     TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            role    TEXT NOT NULL CHECK (role IN ('operator', 'support')),
            csrf    TEXT NOT NULL,
            created TEXT NOT NULL,
            expires TEXT NOT NULL
        );
        CREATE INDEX sessions_by_account ON sessions (account);
        CREATE INDEX sessions_by_expires ON sessions (expires);
        CREATE INDEX installations_by_kind ON installations (kind, code);
        CREATE INDEX installations_by_last_seen ON installations (last_seen);
        """,
        postgres="""
        CREATE TABLE accounts (
            name          text COLLATE "C" PRIMARY KEY,
            role          text NOT NULL CHECK (role IN ('operator', 'support')),
            password_hash text NOT NULL,
            created       text NOT NULL
        );
        CREATE TABLE sessions (
            key     text COLLATE "C" PRIMARY KEY,
            account text COLLATE "C" NOT NULL,
            role    text NOT NULL CHECK (role IN ('operator', 'support')),
            csrf    text NOT NULL,
            created text COLLATE "C" NOT NULL,
            expires text COLLATE "C" NOT NULL
        );
        CREATE INDEX sessions_by_account ON sessions (account);
        CREATE INDEX sessions_by_expires ON sessions (expires);
        CREATE INDEX installations_by_kind ON installations (kind, code);
        CREATE INDEX installations_by_last_seen ON installations (last_seen);
        """,
    ),
    # 10: the results of flow tests (`store/results.py`): what the service's probes and
    # the doctor runs agents report saw of each flow of a plan (caller, callee, feature,
    # flow id, ports), when and from where. Bounded: each flow keeps its newest rows
    # only (`Store.add_flow_results`), and rows go with either installation.
    Migration(
        sqlite=f"""
        CREATE TABLE flow_results (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            caller   TEXT NOT NULL {_CODE_OF_INSTALLATION},
            callee   TEXT NOT NULL {_CODE_OF_INSTALLATION},
            feature  TEXT NOT NULL,
            flow     TEXT NOT NULL,
            ports    TEXT NOT NULL,
            outcome  TEXT NOT NULL CHECK (outcome IN ('passed', 'failed', 'untested')),
            at       TEXT NOT NULL,
            source   TEXT NOT NULL,
            reporter TEXT NOT NULL {_CODE_OF_INSTALLATION},
            detail   TEXT NOT NULL
        );
        CREATE INDEX flow_results_by_flow ON flow_results (caller, callee, feature, flow, at);
        CREATE INDEX flow_results_by_callee ON flow_results (callee);
        CREATE INDEX flow_results_by_reporter ON flow_results (reporter);
        """,
        postgres=f"""
        CREATE TABLE flow_results (
            id       bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            caller   {_PG_CODE_OF_INSTALLATION} NOT NULL,
            callee   {_PG_CODE_OF_INSTALLATION} NOT NULL,
            feature  text COLLATE "C" NOT NULL,
            flow     text COLLATE "C" NOT NULL,
            ports    text COLLATE "C" NOT NULL,
            outcome  text NOT NULL CHECK (outcome IN ('passed', 'failed', 'untested')),
            at       text COLLATE "C" NOT NULL,
            source   text NOT NULL,
            reporter {_PG_CODE_OF_INSTALLATION} NOT NULL,
            detail   text NOT NULL
        );
        CREATE INDEX flow_results_by_flow ON flow_results (caller, callee, feature, flow, at);
        CREATE INDEX flow_results_by_callee ON flow_results (callee);
        CREATE INDEX flow_results_by_reporter ON flow_results (reporter);
        """,
    ),
    # 11: the dashboard account that asked for a flow result (its probe button): the
    # result's reporter stays an installation (the one probed), the account is named.
    Migration(
        sqlite="ALTER TABLE flow_results ADD COLUMN account TEXT;",
        postgres="ALTER TABLE flow_results ADD COLUMN account text;",
    ),
)


SCHEMA_LOCK = 0x636F6E74726F7061
"""The PostgreSQL advisory lock that migrations take ("contropa"): one node at a time."""


def first_serial() -> int:
    """The serial of a new store: the current time, so that it stays ahead of any
    serial a previous store for the same zone may have published (version 4 sets the
    journal's floor to it)."""
    return int(time.time()) % 2**32 or 1


def _newer(where: str, version: int) -> StorageError:
    return StorageError(
        f"the store at {where} has schema version {version}, newer than"
        f" this controparte knows ({len(MIGRATIONS)})"
    )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the versions the SQLite database on `conn` (at `path`) lacks, in one
    transaction. A database of a newer version than this code knows raises
    `StorageError`."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise _newer(str(path), version)
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in migration.sqlite.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if number == 1:
                conn.execute("INSERT INTO zone_state (id, serial) VALUES (1, ?)", (first_serial(),))
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def migrate_postgres(conn: psycopg.Connection[tuple[object, ...]], where: str) -> None:
    """Apply the versions the PostgreSQL database on `conn` (an autocommit connection;
    `where` names it in errors) lacks, in one transaction under `SCHEMA_LOCK`. A
    database of a newer version than this code knows raises `StorageError`."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if row is not None and row[0]:
            found = conn.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if found is None else int(str(found[0]))
        else:
            conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = 0
        if version > len(MIGRATIONS):
            raise _newer(where, version)
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute(migration.postgres)  # several statements: one simple query
            if number == 1:
                conn.execute(
                    "INSERT INTO zone_state (id, serial) VALUES (1, %s)", (first_serial(),)
                )
            conn.execute("UPDATE schema_version SET version = %s", (number,))

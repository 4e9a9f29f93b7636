"""The SQLite schema: its versions, applied in order (`MIGRATIONS`), and `migrate`, which
brings a database up to the newest. `PRAGMA user_version` counts the versions applied.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from controparte.errors import StorageError

_CODE_OF_INSTALLATION = (
    "COLLATE NOCASE REFERENCES installations (code) ON DELETE CASCADE ON UPDATE CASCADE"
)
"""The constraints of a column that holds an installation's code: compared as codes are
(any case), renamed with the installation and deleted with it."""

MIGRATIONS: tuple[str, ...] = (
    # 1: the registry, the zone serial, the DNS change journal and the audit history.
    """
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
    # 2: credentials. Token hashes (HMAC-SHA-256), admin token hashes, TSIG keys
    # (secrets encrypted; code NULL = an admin key that may change any installation).
    f"""
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
    # 3: counterpart links (a calls b for a feature) and, per installation and
    # counterpart, the public addresses `controparte firewall` saw on its last run.
    f"""
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
    # 4: zone transfer. Each journal row also keeps what was served before the change
    # (the before-image), so that an IXFR can name what to delete; `zone_state` keeps
    # the journal's floor: every change after `floor_seq` is in the journal, and the
    # zone stood at `floor_serial` there (older rows are pruned, and rows written before
    # this version have no before-image, so the floor starts at the newest row). TSIG
    # keys gain a role: a key signs updates or transfers, never both. `zone_config` is
    # the fingerprint of the zone configuration last served (SOA fields, NS, glue).
    """
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
)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the versions the database on `conn` (at `path`) lacks, in one transaction.
    A database of a newer version than this code knows raises `StorageError`."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StorageError(
                f"the store at {path} has schema version {version}, newer than"
                f" this controparte knows ({len(MIGRATIONS)})"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if number == 1:
                # A serial that starts at the current time stays ahead of any serial a
                # previous store for the same zone may have published.
                conn.execute(
                    "INSERT INTO zone_state (id, serial) VALUES (1, ?)",
                    (int(time.time()) % 2**32 or 1,),
                )  # version 4 sets the journal's floor to this serial on a new store
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

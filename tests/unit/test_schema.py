"""The SQLite schema's migration runner (`store/schema.py`), on a bare connection."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from controparte.errors import StorageError
from controparte.store.schema import MIGRATIONS, migrate


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)  # as the store: explicit BEGIN


def tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows} - {"sqlite_sequence"}


def test_a_new_database_gets_every_version_and_a_serial_from_the_clock(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db")
    before = int(time.time())
    migrate(conn, tmp_path / "db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert tables(conn) == {
        "installations",
        "zone_state",
        "journal",
        "history",
        "tokens",
        "admin_tokens",
        "tsig_keys",
        "links",
        "firewall_seen",
    }
    [(serial,)] = conn.execute("SELECT serial FROM zone_state").fetchall()
    assert before <= serial <= int(time.time())


def test_a_current_database_is_left_as_it_is(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db")
    migrate(conn, tmp_path / "db")
    conn.execute("UPDATE zone_state SET serial = 7")
    migrate(conn, tmp_path / "db")
    assert conn.execute("SELECT serial FROM zone_state").fetchall() == [(7,)]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StorageError, match=rf"schema version {len(MIGRATIONS) + 1}, newer than"):
        migrate(conn, tmp_path / "db")
    assert not conn.in_transaction
    assert tables(conn) == set()

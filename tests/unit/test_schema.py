"""The schema's migration runners (`store/schema.py`), on a bare connection: SQLite's,
PostgreSQL's (nodes starting at once take turns), and the same tables and columns on
both."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from controparte.errors import StorageError
from controparte.store.schema import MIGRATIONS, migrate, migrate_postgres


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
        "relay_requests",
        "relay_polls",
        "tsig_seen",
        "auth_failures",
        "live_released",
        "accounts",
        "sessions",
        "flow_results",
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


# -- PostgreSQL ----------------------------------------------------------------------------


def pg_tables(conn: psycopg.Connection[tuple[object, ...]]) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    ).fetchall()
    return {str(r[0]) for r in rows} - {"schema_version"}


def pg_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    assert row is not None
    return int(str(row[0]))


def test_postgres_gets_every_version_and_a_serial_from_the_clock(pg_database: str) -> None:
    before = int(time.time())
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate_postgres(conn, "test")
        assert pg_version(conn) == len(MIGRATIONS)
        [(serial, last_seq, floor_seq)] = conn.execute(
            "SELECT serial, last_seq, floor_seq FROM zone_state"
        ).fetchall()
        assert before <= int(str(serial)) <= int(time.time())
        assert (last_seq, floor_seq) == (0, 0)
        conn.execute("UPDATE zone_state SET serial = 7")
        migrate_postgres(conn, "test")  # a current database is left as it is
        assert conn.execute("SELECT serial FROM zone_state").fetchall() == [(7,)]


def test_both_engines_have_the_same_tables_and_columns(tmp_path: Path, pg_database: str) -> None:
    lite = connect(tmp_path / "db")
    migrate(lite, tmp_path / "db")
    sqlite_columns = {
        (table, str(column[1]))
        for table in tables(lite)
        for column in lite.execute(f"PRAGMA table_info({table})").fetchall()
    }
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate_postgres(conn, "test")
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name <> 'schema_version'"
        ).fetchall()
    postgres_columns = {(str(t), str(c)) for t, c in rows}
    # The one difference on purpose: PostgreSQL counts the journal's seqs in zone_state.
    assert postgres_columns - sqlite_columns == {("zone_state", "last_seq")}
    assert sqlite_columns - postgres_columns == set()


def test_postgres_newer_database_is_refused_untouched(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (%s)", (len(MIGRATIONS) + 1,))
        with pytest.raises(StorageError, match=rf"schema version {len(MIGRATIONS) + 1}, newer"):
            migrate_postgres(conn, "test")
        assert pg_tables(conn) == set()


def test_nodes_migrating_at_once_take_turns(pg_database: str) -> None:
    outcomes: list[str] = []
    start = threading.Barrier(3)

    def node() -> None:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            start.wait()
            try:
                migrate_postgres(conn, "test")
            except psycopg.Error as exc:  # without the lock: a duplicate in pg_type
                outcomes.append(type(exc).__name__)
            else:
                outcomes.append("ok")

    threads = [threading.Thread(target=node) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes == ["ok"] * 3
    with psycopg.connect(pg_database, autocommit=True) as conn:
        assert pg_version(conn) == len(MIGRATIONS)
        assert conn.execute("SELECT count(*) FROM zone_state").fetchall() == [(1,)]

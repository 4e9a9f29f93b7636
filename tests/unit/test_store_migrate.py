"""Moving a registry from SQLite to PostgreSQL (`store/migrate.py`, `controparte migrate`)
in the cases the end-to-end test (tests/integration/test_migrate.py) does not build: a
registry of an older schema version (migrated in memory, the file untouched), a serial
at the top of its range, a row PostgreSQL refuses, a newer or foreign file, a target
holding only part of a registry, a database that cannot be reached or does not answer,
and the command's own refusals. Whatever fails leaves the target as it was."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from controparte.errors import ConfigError, StorageError, StorageUnavailableError
from controparte.model import DnsRecord, Installation
from controparte.model.installation import utcnow
from controparte.service.credentials import ServerSecret
from controparte.store import Origin
from controparte.store.migrate import TABLES, sqlite_to_postgres
from controparte.store.postgres import PostgresStore
from controparte.store.schema import MIGRATIONS, migrate
from controparte.store.sqlite import DB_FILE, SqliteStore
from tests.clirunner import Run, as_json, invoke_cli, ok, user_error
from tests.processes import HOST
from tests.unit.test_journal import version_3_store

PASSWORD = "sekrit-in-url"
FINGERPRINT = "f1" * 32  # of the data directory's server secret, as the command passes it
A = Installation(code="A-1", label="alpha", ipv4="192.0.2.1", created=utcnow(), updated=utcnow())


def registry(data: Path) -> Path:
    """A registry in `data` with one installation and its token; its file."""
    store = SqliteStore.in_directory(data)
    try:
        with store.transaction(Origin()) as tx:
            tx.insert(A)
            tx.set_token_hash(A.code, "hash-of-a")
    finally:
        store.close()
    return data / DB_FILE


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tables_of(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {str(r[0]) for r in rows}


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that takes connections and never answers (a server that hangs)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_every_table_of_the_schema_is_carried() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, Path(":memory:"))
    found = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert {str(r[0]) for r in found} - {"sqlite_sequence", "zone_state"} == set(TABLES)


def test_an_older_registry_is_migrated_in_memory_never_in_its_file(
    tmp_path: Path, pg_database: str
) -> None:
    path = tmp_path / DB_FILE
    version_3_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO installations (code, label, kind, ipv4, port, created, updated)"
            " VALUES ('A-1', 'alpha', 'onprem', '192.0.2.1', 1, '2026-01-01T00:00:00+00:00',"
            " '2026-01-01T00:00:00+00:00')"
        )
    before = digest(path)

    moved = sqlite_to_postgres(path, pg_database, FINGERPRINT)

    assert digest(path) == before
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
    assert (moved.zone.serial, moved.zone.floor_seq, moved.zone.floor_serial) == (41, 1, 41)
    store = PostgresStore(pg_database)
    try:  # none recorded before version 5: the data directory's secret made the credentials
        assert store.adopt_secret_fingerprint("another") == FINGERPRINT
        assert store.get("a-1") is not None
        assert (store.journal_floor().seq, store.journal_floor().serial) == (1, 41)
        assert store.journal_reach(41) == 1  # as version 4 says: the floor at the newest
        with store.transaction(Origin()) as tx:
            tx.delete(tx.get("A-1") or pytest.fail("A-1 was not carried"))
        assert (store.serial(), store.last_seq()) == (42, 2)
        assert store.journal_since(1)[0].before == DnsRecord("alpha", "192.0.2.1", None, 1)
    finally:
        store.close()


def test_a_recorded_secret_fingerprint_is_carried_as_it_is(
    tmp_path: Path, pg_database: str
) -> None:
    path = registry(tmp_path)
    store = SqliteStore(path)
    try:
        assert store.adopt_secret_fingerprint("recorded") == "recorded"
    finally:
        store.close()
    assert sqlite_to_postgres(path, pg_database, FINGERPRINT).zone.secret_fingerprint == "recorded"
    target = PostgresStore(pg_database)
    try:
        assert target.adopt_secret_fingerprint(FINGERPRINT) == "recorded"
    finally:
        target.close()


def test_a_serial_at_the_top_of_its_range_wraps_on_the_next_change(
    tmp_path: Path, pg_database: str
) -> None:
    path = registry(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE zone_state SET serial = 4294967295")
    assert sqlite_to_postgres(path, pg_database, FINGERPRINT).zone.serial == 4294967295
    store = PostgresStore(pg_database)
    try:
        with store.transaction(Origin()) as tx:
            tx.delete(A)
        assert store.serial() == 1  # RFC 1982: never 0
    finally:
        store.close()


def test_a_row_postgresql_refuses_leaves_the_target_as_it_was(
    tmp_path: Path, pg_database: str
) -> None:
    path = registry(tmp_path)
    with sqlite3.connect(path) as conn:  # no foreign keys enforced on this connection
        conn.execute("INSERT INTO tokens (code, token_hash, created) VALUES ('NONE-1', 'h', 'x')")
    with pytest.raises(StorageError, match=r"holds a row PostgreSQL refuses.*nothing was changed"):
        sqlite_to_postgres(path, pg_database, FINGERPRINT)
    assert tables_of(pg_database) == set()  # not even the schema


@pytest.mark.parametrize(
    ("version", "error", "message"),
    [
        (len(MIGRATIONS) + 1, StorageError, "newer than this controparte knows"),
        (0, ConfigError, "is not a controparte registry"),
    ],
)
def test_a_file_of_another_version_is_refused(
    tmp_path: Path, pg_database: str, version: int, error: type[Exception], message: str
) -> None:
    path = tmp_path / DB_FILE
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    with pytest.raises(error, match=message):
        sqlite_to_postgres(path, pg_database, FINGERPRINT)
    assert tables_of(pg_database) == set()


def test_a_target_holding_part_of_a_registry_is_refused(tmp_path: Path, pg_database: str) -> None:
    store = PostgresStore(pg_database)
    try:
        with store.transaction(Origin()) as tx:
            tx.add_admin_token("hash-of-an-admin", None)
        serial = store.serial()
        with pytest.raises(ConfigError, match=r"already holds a registry \(admin_tokens: 1\)"):
            sqlite_to_postgres(registry(tmp_path), pg_database, FINGERPRINT)
        assert (store.count(), store.serial(), store.admin_token_hashes()) == (
            0,
            serial,
            ["hash-of-an-admin"],
        )
    finally:
        store.close()


def test_a_database_that_does_not_answer_fails_within_seconds(
    tmp_path: Path, silent_server: int
) -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as raised:
        sqlite_to_postgres(
            registry(tmp_path),
            f"postgresql://cp:{PASSWORD}@{HOST}:{silent_server}/registry",
            FINGERPRINT,
        )
    assert time.monotonic() - started < 10
    assert f"postgresql://cp@{HOST}:{silent_server}/registry is unavailable" in str(raised.value)
    assert PASSWORD not in str(raised.value)


# -- the command ---------------------------------------------------------------------------


def test_the_command_moves_the_registry_and_reports_it_as_json(
    run: Run, data: Path, pg_database: str
) -> None:
    registry(data)
    url = pg_database.replace("postgres@", f"postgres:{PASSWORD}@")
    result = run("migrate", "--to", url, "--json")
    assert PASSWORD not in result.output
    report = as_json(result)
    assert isinstance(report, dict)
    assert report["rows"] == {
        **dict.fromkeys(TABLES, 0),
        "installations": 1,
        "tokens": 1,
        "history": 2,
        "journal": 1,
    }
    assert report["target"] == pg_database
    assert report["source"] == str(data / DB_FILE)
    store = PostgresStore(pg_database)
    try:
        assert report["serial"] == store.serial()
        assert report["last_seq"] == store.last_seq() == 1
        assert store.token_hash("A-1") == "hash-of-a"
        secret = ServerSecret.load_or_create(data)  # the one the command read
        assert store.adopt_secret_fingerprint("another") == secret.fingerprint
    finally:
        store.close()


def test_the_command_refuses_settings_that_name_postgresql_already(run: Run, data: Path) -> None:
    registry(data)
    line = user_error(
        run(
            "migrate",
            "--to",
            "postgresql://cp@db.example.test/new",
            env={"CONTROPARTE_DATABASE": f"postgresql://cp:{PASSWORD}@db.example.test/old"},
        ),
        exit_code=2,
    )
    assert "database: the settings name PostgreSQL already" in line
    assert "postgresql://cp@db.example.test/old" in line
    assert PASSWORD not in line


@pytest.mark.parametrize(
    ("to", "message"),
    [
        (f"mysql://cp:{PASSWORD}@db.example.test/registry", "--to: expected a postgresql:// URL"),
        (
            f"postgresql://cp:{PASSWORD}%zz@db.example.test/registry",  # a bad escape
            "--to: not a PostgreSQL URL libpq reads",
        ),
    ],
)
def test_the_command_refuses_a_url_that_is_no_postgresql(
    run: Run, data: Path, to: str, message: str
) -> None:
    registry(data)
    line = user_error(run("migrate", "--to", to), exit_code=2)
    assert message in line
    assert PASSWORD not in line


def test_the_command_needs_a_registry(bare_data: Path) -> None:
    to = "postgresql://cp@db.example.test/r"
    line = user_error(invoke_cli("migrate", "--to", to, data=bare_data), exit_code=2)
    assert f"data: no registry in {bare_data}" in line
    assert not bare_data.exists()


def test_the_command_on_a_database_that_does_not_answer(
    run: Run, data: Path, silent_server: int
) -> None:
    registry(data)
    started = time.monotonic()
    to = f"postgresql://cp:{PASSWORD}@{HOST}:{silent_server}/registry"
    line = user_error(run("migrate", "--to", to))
    assert time.monotonic() - started < 10
    assert "is unavailable" in line
    assert PASSWORD not in line
    ok(run("installation", "show", "A-1"))  # the registry stays where it was

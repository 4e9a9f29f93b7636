"""What only the PostgreSQL store does, or what only concurrency on it shows: a code
differing only in case conflicts with one being written by another connection; a
reader of the journal is woken by a commit on another connection, never by a rollback
or a change DNS does not serve, and again after the server restarted; an unreachable
or restarting database is a StorageUnavailableError within seconds (never a hang, a
driver's traceback or the URL's password), and the store works again once it is back;
a transaction whose statement failed, the failure caught, does not commit the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from controparte.errors import ConflictError, StorageError, StorageUnavailableError
from controparte.model import Installation, InstallationChange
from controparte.model.installation import utcnow
from controparte.store import Origin, open_store
from controparte.store.postgres import PostgresStore, conninfo
from tests.pgserver import PgServer, url_with_database

WAIT = 10.0


def installation(code: str, label: str) -> Installation:
    now = utcnow()
    return Installation(code=code, label=label, created=now, updated=now)


def waiting_for_a_lock(url: str) -> bool:
    """Whether a session on `url`'s database waits for a lock now."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and int(row[0]) > 0


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def store(pg_database: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(pg_database)
    yield opened
    opened.close()


def test_open_store_picks_the_engine_of_the_setting(tmp_path: Path, pg_database: str) -> None:
    opened = open_store(tmp_path, pg_database)
    try:
        assert isinstance(opened, PostgresStore)
        assert opened.count() == 0
    finally:
        opened.close()
    assert list(tmp_path.iterdir()) == []  # nothing of SQLite's


def test_a_code_in_another_case_waits_for_the_first_and_conflicts(
    store: PostgresStore, pg_database: str
) -> None:
    inside = threading.Event()
    release = threading.Event()
    outcome: list[object] = []

    def first() -> None:
        with store.transaction(Origin()) as tx:
            tx.insert(installation("Case-1", "first"))
            inside.set()
            release.wait(WAIT)

    def second() -> None:
        try:
            with store.transaction(Origin()) as tx:
                tx.insert(installation("cASE-1", "second"))
        except ConflictError as exc:
            outcome.append(str(exc))

    one = threading.Thread(target=first)
    one.start()
    assert inside.wait(WAIT)
    two = threading.Thread(target=second)
    two.start()
    until(lambda: waiting_for_a_lock(pg_database), "the second insert never waited")
    release.set()
    one.join(WAIT)
    two.join(WAIT)
    assert outcome == ["code: 'cASE-1' is already registered"]
    assert [(i.code, i.label) for i in store.installations()] == [("Case-1", "first")]


def test_the_listener_wakes_for_commits_only(store: PostgresStore, pg_database: str) -> None:
    other = PostgresStore(pg_database)  # another node: a pool of its own
    listener = store.change_listener()
    try:
        assert not listener.connected
        assert listener.wait(WAIT)  # connected: read the journal now
        assert listener.connected
        assert not listener.wait(0.2)
        alpha = installation("A-1", "alpha")
        with other.transaction(Origin()) as tx:
            tx.insert(alpha)
        assert listener.wait(WAIT)
        with pytest.raises(RuntimeError), other.transaction(Origin()) as tx:
            tx.update(alpha, alpha.with_changes(InstallationChange(port=4443)))
            raise RuntimeError("abandon")
        assert not listener.wait(0.5)  # rolled back: no notification
        with other.transaction(Origin()) as tx:
            tx.set_token_hash("A-1", "hash")  # DNS serves nothing new
        assert not listener.wait(0.5)
        with other.transaction(Origin()) as tx:
            tx.delete(alpha)
        assert listener.wait(WAIT)
    finally:
        listener.close()
        other.close()
    assert not listener.wait(0.1)  # closed


def test_close_ends_a_wait_in_progress(store: PostgresStore) -> None:
    listener = store.change_listener()
    assert listener.wait(WAIT)
    returned: list[bool] = []
    waiter = threading.Thread(target=lambda: returned.append(listener.wait(60)))
    waiter.start()
    time.sleep(0.1)  # inside its wait (a wait that has not begun returns at once too)
    started = time.monotonic()
    listener.close()
    waiter.join(WAIT)
    assert returned == [False]
    assert time.monotonic() - started < WAIT


@pytest.fixture
def private_store(private_pg: PgServer) -> Iterator[PostgresStore]:
    """A store, with a password in its URL, on a server of the test's own."""
    url = private_pg.url.replace("postgres@", "postgres:sekrit-pass@")
    opened = PostgresStore(url_with_database(url, "postgres"), timeout=2.0)
    with opened.transaction(Origin()) as tx:
        tx.insert(installation("A-1", "alpha"))
    yield opened
    opened.close()


def test_a_database_down_is_unavailable_then_back(
    private_pg: PgServer, private_store: PostgresStore
) -> None:
    listener = private_store.change_listener()
    try:
        assert listener.wait(WAIT)
        private_pg.stop("fast")
        for attempt in (
            lambda: private_store.dns_snapshot(list),
            lambda: private_store.transaction(Origin()).__enter__(),
        ):
            started = time.monotonic()
            with pytest.raises(StorageUnavailableError, match="unavailable") as caught:
                attempt()
            assert time.monotonic() - started < WAIT
            assert "sekrit" not in str(caught.value)
            assert caught.value.__cause__ is None and caught.value.__suppress_context__
        assert not listener.wait(0.5)  # its connection dropped
        assert not listener.connected
        private_pg.start()
        assert private_store.count() == 1  # the pool made new connections
        until(lambda: listener.wait(0.5) and listener.connected, "no reconnection")
        with private_store.transaction(Origin()) as tx:
            tx.insert(installation("B-2", "beta"))
        assert listener.wait(WAIT)
    finally:
        listener.close()


def test_a_transaction_across_a_crash_is_unavailable(
    private_pg: PgServer, private_store: PostgresStore
) -> None:
    with pytest.raises(StorageUnavailableError), private_store.transaction(Origin()) as tx:
        tx.insert(installation("B-2", "beta"))
        private_pg.kill()
    private_pg.start()
    assert [i.code for i in private_store.installations()] == ["A-1"]


POOL_PAUSE = 0.9
"""psycopg_pool's own check pauses 0.9-1.1 s after the second connection that fails it."""


def test_after_a_crash_the_dead_connections_are_passed_over_at_once(
    private_pg: PgServer, private_store: PostgresStore
) -> None:
    """After a crash every idle connection is dead. The first read after the restart
    gets a working connection without a pause between two dead ones: with the pool's
    own check it waited 1 s after the second, 2 s after the third (DNS on a node stayed
    stale that long, while later callers were served)."""
    held = 6
    together = threading.Barrier(held)

    def hold() -> None:  # a connection each, at once: the pool keeps them idle after
        with private_store.transaction(Origin()):
            together.wait(WAIT)

    threads = [threading.Thread(target=hold) for _ in range(held)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    private_pg.kill()
    private_pg.start()
    started = time.monotonic()
    assert private_store.count() == 1
    assert time.monotonic() - started < POOL_PAUSE


def test_a_failed_statement_caught_inside_fails_the_commit(
    store: PostgresStore, pg_database: str
) -> None:
    with store.transaction(Origin()) as tx:
        tx.insert(installation("A-1", "alpha"))
        tx.insert(installation("B-2", "beta"))
    quick = PostgresStore(pg_database + "?options=-c%20lock_timeout%3D200")
    try:
        with psycopg.connect(pg_database, autocommit=True) as holder, holder.transaction():
            holder.execute("SELECT 1 FROM installations WHERE code = 'A-1' FOR UPDATE")
            with (
                pytest.raises(StorageError, match="an earlier statement failed"),
                quick.transaction(Origin()) as tx,
            ):
                tx.delete(installation("B-2", "beta"))
                with pytest.raises(StorageUnavailableError, match="lock timeout"):
                    quick.get("A-1")  # held by the other session: a retryable error
    finally:
        quick.close()
    assert store.get("B-2") is not None  # nothing of it was committed


def test_every_connection_has_timeouts() -> None:
    own = conninfo_to_dict(conninfo("postgresql://u@db.example.test/reg?connect_timeout=7"))
    assert own["connect_timeout"] == "7"  # the URL's own wins
    assert (own["tcp_user_timeout"], own["keepalives"]) == ("5000", "1")
    given = conninfo("postgresql://u@db.example.test/reg?options=-c%20lock_timeout%3D200")
    options = str(conninfo_to_dict(given)["options"])
    assert options.index("lock_timeout=5000") < options.index("lock_timeout=200")  # last wins
    assert "idle_in_transaction_session_timeout" in options

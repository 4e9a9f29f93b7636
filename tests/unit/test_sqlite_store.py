"""The SQLite store's connections: reads go through a read-only connection per thread
and never wait for a write in progress (WAL), a thread inside its own write
transaction reads what it wrote, writers of two stores on one file take turns through
the lock file (the second one seen waiting in flock, Linux /proc/locks), and a closed
store refuses reads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from controparte.errors import StorageError
from controparte.model import Installation
from controparte.model.installation import utcnow
from controparte.store import Origin, open_store
from controparte.store.sqlite import SqliteStore

WAIT = 5.0


def alpha(ipv4: str = "192.0.2.1") -> Installation:
    now = utcnow()
    return Installation(code="A-1", label="alpha", ipv4=ipv4, created=now, updated=now)


def waiting_in_flock() -> bool:
    """Whether a thread of this process waits in flock(2) now: /proc/locks shows the
    request, marked `->`, under this process's id (SQLite's own locks are fcntl ones,
    which it polls rather than waits in)."""
    pid = str(os.getpid())
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1:4] == ["->", "FLOCK", "ADVISORY"] and fields[5] == pid:
            return True
    return False


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    opened = open_store(tmp_path)
    with opened.transaction(Origin()) as tx:
        tx.insert(alpha())
    return opened


def test_a_read_does_not_wait_for_a_write_in_progress(store: SqliteStore) -> None:
    inside = threading.Event()
    release = threading.Event()

    def write() -> None:
        with store.transaction(Origin()) as tx:
            old = tx.get("A-1")
            assert old is not None
            tx.update(old, alpha("192.0.2.2"))
            inside.set()
            release.wait(WAIT)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert inside.wait(WAIT)
        started = time.monotonic()
        seen = store.get("A-1")  # the writer holds the lock and its transaction open
        serial = store.serial()
        assert time.monotonic() - started < 1.0
        assert seen is not None
        assert seen.ipv4 == "192.0.2.1"  # the last committed state, not the write's
    finally:
        release.set()
        writer.join(WAIT)
    after = store.get("A-1")
    assert after is not None
    assert after.ipv4 == "192.0.2.2"  # committed: every thread reads it at once
    assert store.serial() != serial


def test_inside_its_transaction_a_thread_reads_its_own_changes(store: SqliteStore) -> None:
    with store.transaction(Origin()) as tx:
        old = tx.get("A-1")
        assert old is not None
        tx.update(old, alpha("192.0.2.3"))
        inside = store.get("A-1")
        assert inside is not None
        assert inside.ipv4 == "192.0.2.3"
        assert store.get_by_label("alpha") == inside
    outside: list[Installation | None] = []
    thread = threading.Thread(target=lambda: outside.append(store.get("A-1")))
    thread.start()
    thread.join(WAIT)
    assert outside[0] is not None
    assert outside[0].ipv4 == "192.0.2.3"


def test_a_rolled_back_change_is_never_read(store: SqliteStore) -> None:
    with pytest.raises(RuntimeError), store.transaction(Origin()) as tx:
        old = tx.get("A-1")
        assert old is not None
        tx.update(old, alpha("192.0.2.4"))
        raise RuntimeError("abandon")
    seen = store.get("A-1")
    assert seen is not None
    assert seen.ipv4 == "192.0.2.1"


def test_writers_of_two_stores_on_one_file_take_turns(tmp_path: Path, store: SqliteStore) -> None:
    other = open_store(tmp_path)  # as another process would: its own lock file handle
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with store.transaction(Origin()) as tx:
            inside.set()
            release.wait(WAIT)
            old = tx.get("A-1")
            assert old is not None
            tx.update(old, alpha("192.0.2.5"))
            order.append("first")

    def second() -> None:
        with other.transaction(Origin()) as tx:
            old = tx.get("A-1")  # sees the first writer's committed change
            assert old is not None
            order.append(f"second saw {old.ipv4}")

    one = threading.Thread(target=first)
    one.start()
    assert inside.wait(WAIT)
    two = threading.Thread(target=second)
    two.start()
    deadline = time.monotonic() + WAIT
    while not waiting_in_flock():  # a positive barrier: the second writer is at the lock
        assert time.monotonic() < deadline, "the second writer never waited for the lock"
        time.sleep(0.01)
    assert order == []  # waiting for its turn
    release.set()
    one.join(WAIT)
    two.join(WAIT)
    assert order == ["first", "second saw 192.0.2.5"]
    other.close()


def test_reads_from_many_threads_and_connections_of_ended_threads(store: SqliteStore) -> None:
    seen: list[int] = []

    def read() -> None:
        seen.append(store.count())

    for _ in range(3):
        threads = [threading.Thread(target=read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    assert seen == [1] * 24
    read()  # this thread opens one more and closes those of the ended threads
    assert len(store._readers) <= 9


def test_a_closed_store_refuses_reads(store: SqliteStore) -> None:
    assert store.count() == 1  # this thread has its read connection now
    store.close()
    with pytest.raises(StorageError):
        store.count()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            store.get("A-1")
        except StorageError as exc:
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(WAIT)
    assert len(errors) == 1
    store.close()  # twice is harmless

"""What only the SQLite store does: writers of two stores on one file take turns through
the lock file (the second one seen waiting in flock, Linux /proc/locks), and the read
connections of threads that have ended are closed."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controparte.model import Installation
from controparte.model.installation import utcnow
from controparte.store import Origin, SqliteStore

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
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore.in_directory(tmp_path)
    with opened.transaction(Origin()) as tx:
        tx.insert(alpha())
    yield opened
    opened.close()


def test_writers_of_two_stores_on_one_file_take_turns(tmp_path: Path, store: SqliteStore) -> None:
    other = SqliteStore.in_directory(tmp_path)  # as another process would: its own lock file handle
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


def test_the_connections_of_ended_threads_are_closed(store: SqliteStore) -> None:
    for _ in range(3):
        threads = [threading.Thread(target=store.count) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    store.count()  # this thread opens one more and closes those of the ended threads
    assert len(store._readers) <= 9

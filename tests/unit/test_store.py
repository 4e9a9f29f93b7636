"""The store's contract, on each engine: reads never wait for a write in progress, a
thread inside its own write transaction reads what it wrote, a rolled-back change is
never read, codes are unique in any case and labels unique, a batch read ahead
(`prefetch`) answers as the reads it replaces, a malformed code or label is found
nowhere (PostgreSQL could not even take a NUL as a parameter), and a closed store
refuses reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controparte.errors import ConflictError, StorageError
from controparte.model import Installation, InstallationChange
from controparte.model.installation import utcnow
from controparte.store import Origin, Store, open_store

WAIT = 5.0


def alpha(ipv4: str = "192.0.2.1") -> Installation:
    now = utcnow()
    return Installation(code="A-1", label="alpha", ipv4=ipv4, created=now, updated=now)


@pytest.fixture
def store(tmp_path: Path, database: str) -> Iterator[Store]:
    opened = open_store(tmp_path, database)
    with opened.transaction(Origin()) as tx:
        tx.insert(alpha())
    yield opened
    opened.close()


def test_a_read_does_not_wait_for_a_write_in_progress(store: Store) -> None:
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


def test_inside_its_transaction_a_thread_reads_its_own_changes(store: Store) -> None:
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


def test_a_rolled_back_change_is_never_read(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction(Origin()) as tx:
        old = tx.get("A-1")
        assert old is not None
        tx.update(old, alpha("192.0.2.4"))
        raise RuntimeError("abandon")
    seen = store.get("A-1")
    assert seen is not None
    assert seen.ipv4 == "192.0.2.1"


def test_reads_from_many_threads(store: Store) -> None:
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


def test_a_closed_store_refuses_reads(store: Store) -> None:
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


def test_codes_are_unique_in_any_case_and_labels_unique(store: Store) -> None:
    now = utcnow()
    beta = Installation(code="B-2", label="beta", created=now, updated=now)
    with store.transaction(Origin()) as tx:
        with pytest.raises(ConflictError, match="code: 'a-1' is already registered"):
            tx.insert(Installation(code="a-1", label="other", created=now, updated=now))
        with pytest.raises(ConflictError, match="label: 'alpha' is already used"):
            tx.insert(Installation(code="C-3", label="alpha", created=now, updated=now))
        tx.insert(beta)  # a refused write leaves the transaction usable
        with pytest.raises(ConflictError, match="label: 'alpha' is already used"):
            tx.update(beta, Installation(code="B-2", label="alpha", created=now, updated=now))
        found = tx.get("a-1")
    assert found is not None and found.code == "A-1"
    assert store.get("b-2") == beta
    assert [i.code for i in store.installations()] == ["A-1", "B-2"]


def test_a_prefetched_batch_reads_as_without(store: Store) -> None:
    now = utcnow()
    beta = Installation(code="B-2", label="beta", created=now, updated=now)
    with store.transaction(Origin()) as tx:
        tx.insert(beta)
        tx.set_token_hash("A-1", "hash-a")
    first = store.get("A-1")
    assert first is not None
    moved = first.with_changes(InstallationChange(ipv4="192.0.2.7"), allow_non_global=True)
    again = moved.with_changes(InstallationChange(port=4443), allow_non_global=True)
    with store.transaction(Origin(via="heartbeat")) as tx:
        tx.prefetch(["a-1", "B-2", "NONE", "A-1"])
        assert tx.get("a-1") == first
        assert tx.get("NONE") is None
        assert store.token_hash("a-1") == "hash-a"
        assert store.token_hash("B-2") is None
        tx.update(first, moved)
        assert tx.get("A-1") == moved
        tx.update(moved, again)  # twice in one batch: the second over the first
        assert store.get("A-1") == again  # the thread's reads see its writes
        assert store.get_by_label("alpha") == again
        tx.set_token_hash("B-2", "hash-b")
        assert store.token_hash("B-2") == "hash-b"
        tx.delete(beta)
        assert tx.get("B-2") is None
    assert store.get("A-1") == again
    assert store.get("B-2") is None
    assert store.token_hash("B-2") is None  # removed with its installation
    changes = [(e.code, e.record) for e in store.journal_since(store.last_seq() - 3)]
    assert changes == [
        ("A-1", moved.dns_view()),
        ("A-1", again.dns_view()),
        ("B-2", None),
    ]
    assert [h["action"] for h in store.history("A-1")] == ["add", "token", "update", "update"]


def test_a_malformed_code_or_label_is_found_nowhere(store: Store) -> None:
    for code in ("A-1\x00", "A 1", "\udc80", "A" * 65):
        assert store.get(code) is None
        assert store.token_hash(code) is None
    assert store.get_by_label("al\x00pha") is None
    with store.transaction(Origin()) as tx:
        tx.prefetch(["A-1\x00", "a-1"])
        assert tx.get("A-1\x00") is None
        assert tx.get_by_label("alpha\x00") is None
        assert tx.get("a-1") is not None

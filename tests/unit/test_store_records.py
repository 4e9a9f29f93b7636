"""What the store keeps for DNS: `dns_snapshot` yields each installation's `DnsRecord`,
and the journal carries the record served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controparte.model import DnsRecord, Installation, InstallationChange
from controparte.store import Origin, open_store
from controparte.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = open_store(tmp_path)
    yield opened
    opened.close()


def add(store: SqliteStore, *installations: Installation) -> None:
    with store.transaction(Origin()) as tx:
        for inst in installations:
            tx.insert(inst)


A = Installation.create(
    "A-1", "alpha", ipv4="192.0.2.1", ipv6="2001:db8::1", port=9001, allow_non_global=True
)
B = Installation.create("B-2", "beta", port=9002)
C = Installation.create("C-3", "gamma")


def test_the_snapshot_yields_each_installations_record(store: SqliteStore) -> None:
    add(store, A, B, C)
    serial, seq, records = store.dns_snapshot(list)
    assert all(type(r) is DnsRecord for r in records)
    assert sorted(records) == [
        DnsRecord("alpha", "192.0.2.1", "2001:db8::1", 9001),
        DnsRecord("beta", None, None, 9002),
        DnsRecord("gamma", None, None, None),
    ]
    assert (serial, seq) == (store.serial(), store.last_seq())


def test_the_journal_carries_the_record_served(store: SqliteStore) -> None:
    add(store, A)
    moved = A.with_changes(InstallationChange(label="omega", ipv4=""), allow_non_global=True)
    with store.transaction(Origin()) as tx:
        tx.update(A, moved)
    with store.transaction(Origin()) as tx:
        tx.delete(moved)
    entries = store.journal_since(0)
    assert [(e.code, e.old_label, e.record) for e in entries] == [
        ("A-1", None, DnsRecord("alpha", "192.0.2.1", "2001:db8::1", 9001)),
        ("A-1", "alpha", DnsRecord("omega", None, "2001:db8::1", 9001)),
        ("A-1", "omega", None),
    ]
